"""The plan cache: a graph sent again with new values reuses its plan, and only then."""

import copy

import numpy as np
import pytest

from service.app import create_app
from service.config import Settings
from service.plans import PlanCache, plan_bytes


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
    plans = PlanCache(max_plans=2, max_bytes=10**6)

    class Fake:
        tensor_count = 10

    def build(key):
        built.append(key)
        return Fake()

    for key in ["a", "b", "a", "c", "b"]:  # c evicts b (a was used after b); b is rebuilt
        plans.get(key, lambda key=key: build(key))
    assert built == ["a", "b", "c", "b"] and len(plans) == 2


def test_the_byte_budget_bounds_the_cache():
    each = plan_bytes(type("Fake", (), {"tensor_count": 10}), 1000)
    plans = PlanCache(max_plans=10, max_bytes=2 * each + each // 2)

    class Fake:
        tensor_count = 10

    for key in "abcd":
        plans.get(key, Fake, json_bytes=1000)
    assert len(plans) == 2  # 3 of them would pass the budget
    plans.get("big", Fake, json_bytes=10**6)  # one plan over the whole budget: not kept
    assert "big" not in plans._plans and len(plans) == 2


def test_a_large_graph_is_counted_by_its_bytes(example):
    """~150 MB per distinct large request was kept in v1 (issue 15 item 8): the estimate
    grows with the graph, and the app passes the nodes' JSON size."""
    app = create_app(Settings(plan_cache_bytes=4 * 2**20))
    chain = [{"id": f"n{i}", "op": "neg", "args": [f"n{i - 1}" if i else "x"]}
             for i in range(20_000)]
    body = {"inputs": {"x": {"data": [1.0]}}, "nodes": chain, "outputs": ["n19999"]}
    post(app, body)
    assert len(cache(app)) == 0  # 20,000 tensors x 600 B and 500 kB of JSON x 8 > 4 MiB
    post(app, example)
    assert len(cache(app)) == 1


def test_zero_turns_the_cache_off(example):
    app = create_app(Settings(plan_cache=0))
    post(app, example)
    post(app, example)
    assert len(cache(app)) == 0 and cache(app).misses == 2
