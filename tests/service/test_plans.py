"""The plan cache: a graph sent again with new values reuses its plan, and only then."""

import copy

import numpy as np
import pytest

from service.app import create_app
from service.config import Settings
from service.plans import PlanCache


@pytest.fixture
def app():
    return create_app(Settings(plan_cache=4))


def post(app, body):
    r = app.test_client().post("/v1/evaluate", json=body)
    assert r.status_code == 200, r.json
    return r.json


def cache(app) -> PlanCache:
    return app.extensions["gradserve"].plans


def test_new_values_reuse_the_plan_and_give_new_results(app, example):
    first = post(app, example)
    again = copy.deepcopy(example)
    again["inputs"]["x"]["data"] = [[2, 0], [0, 2]]
    second = post(app, again)
    assert (cache(app).misses, cache(app).hits, len(cache(app))) == (1, 1, 1)
    x, w = np.array([[2, 0], [0, 2]], np.float64), np.array([[0.5], [-0.25]])
    a = 1 / (1 + np.exp(-(x @ w + 1.0)))
    np.testing.assert_allclose(second["outputs"]["a"]["data"], a, rtol=1e-6)
    assert second["outputs"]["loss"]["data"] != first["outputs"]["loss"]["data"]


@pytest.mark.parametrize("change", [
    lambda b: b["inputs"]["x"].update(data=[[1, 2, 3], [4, 5, 6]]) or b["inputs"]["w"].update(
        data=[[1], [2], [3]]),                                   # new shapes
    lambda b: b["nodes"][3].update(op="sum"),                     # another op
    lambda b: b.update(outputs=["a"]),                            # other outputs
    lambda b: b["grad"].update(wrt=["w"]),                        # other wrt
    lambda b: b.update(dtype="float64"),                          # other dtype
    lambda b: b["inputs"]["x"].update(requires_grad=True),        # a new parameter
])
def test_any_structural_change_plans_anew(app, example, change):
    post(app, example)
    changed = copy.deepcopy(example)
    change(changed)
    post(app, changed)
    assert (cache(app).misses, cache(app).hits) == (2, 0)


def test_a_refused_graph_is_not_cached(app, example):
    example["nodes"][0]["args"] = ["x", "nowhere"]
    for _ in range(2):
        r = app.test_client().post("/v1/evaluate", json=example)
        assert r.json["code"] == "unknown_id"
    assert len(cache(app)) == 0 and cache(app).misses == 2


def test_least_recently_used_plans_leave_first():
    built = []
    plans = PlanCache(max_plans=2, max_nodes=100)

    class Fake:
        steps = [None] * 10

    def build(key):
        built.append(key)
        return Fake()

    for key in ["a", "b", "a", "c", "b"]:  # c evicts b (a was used after b); b is rebuilt
        plans.get(key, lambda key=key: build(key))
    assert built == ["a", "b", "c", "b"] and len(plans) == 2


def test_the_node_budget_bounds_the_cache():
    plans = PlanCache(max_plans=10, max_nodes=25)

    class Fake:
        steps = [None] * 10

    for key in "abcd":
        plans.get(key, Fake)
    assert len(plans) == 2  # 3 x 10 nodes would pass 25

    class Big:
        steps = [None] * 26

    plans.get("big", Big)
    assert "big" not in plans._plans


def test_zero_turns_the_cache_off(example):
    app = create_app(Settings(plan_cache=0))
    post(app, example)
    post(app, example)
    assert len(cache(app)) == 0 and cache(app).misses == 2
