"""Client.local(): the same interface, run by the engine in-process; and evaluate_many."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

import client.errors as E
import client.session
from autograd import OPS, Limits
from client import BaseClient, Client, Graph, LocalClient, Result
from client.codec import BINARY_OVER, decode


@pytest.fixture
def local():
    with Client.local() as c:
        yield c


def square_sum(value):
    g = Graph()
    x = g.parameter("x", value)
    return x, (x * x).sum().named("y")


def test_local_offers_what_a_client_offers(local):
    assert isinstance(local, LocalClient) and isinstance(local, BaseClient)
    for verb in ("evaluate", "evaluate_json", "evaluate_many", "info", "ops", "request"):
        assert getattr(type(local), verb) is not None
    assert local.info()["dtypes"] == ["float32", "float64"]
    assert [op["name"] for op in local.ops()] == list(OPS)
    with pytest.raises(E.BadRequestError) as err:
        local.request("GET", "/nope")
    assert (err.value.status, err.value.code) == (404, "not_found")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_and_gradients_are_arrays_of_the_dtype(local, dtype):
    x, y = square_sum([1.0, -2.0, 3.0])
    r = local.evaluate(y, x, grad_of=y, dtype=dtype)
    assert isinstance(r, Result)
    assert r[y].shape == () and r[y].dtype == dtype and float(r[y]) == 14.0
    np.testing.assert_array_equal(r.grad(x), [2.0, -4.0, 6.0])
    assert r.grad(x).dtype == dtype and r["x"] is r[x]
    assert x in r and "nope" not in r
    with pytest.raises(KeyError, match="not among the outputs"):
        r["nope"]
    with pytest.raises(KeyError, match="no gradient"):
        r.grad(y)


def test_the_local_body_is_what_the_server_writes(local):
    x, y = square_sum([1.0, 2.0])
    r = local.evaluate(y, grad_of=y)
    assert r.body == {
        "outputs": {"y": {"shape": [], "dtype": "float32", "data": 5.0}},
        "gradients": {"x": {"shape": [2], "dtype": "float32", "data": [2.0, 4.0]}},
        "warnings": [], "stats": r.stats}
    assert set(r.stats) == {"nodes", "forward_ms", "backward_ms"} and r.stats["nodes"] == 2
    body = local.request("POST", "/v1/evaluate", json=x.graph.to_json(y, dtype="float64"))
    assert body["outputs"]["y"] == {"shape": [], "dtype": "float64", "data": 5.0}


def test_a_large_result_is_written_in_base64(local):
    value = np.arange(BINARY_OVER + 1.0)
    x, y = square_sum(value)
    r = local.evaluate(y, grad_of=y)
    tensors = {**r.body["outputs"], **r.body["gradients"]}
    assert all("b64" in t for t in tensors.values())
    np.testing.assert_array_equal(decode(r.body["gradients"]["x"]), 2 * value)


def test_nonfinite_values_are_reported(local):
    g = Graph()
    x = g.input("x", [-1.0, 0.0, 4.0])
    r = local.evaluate(x.log().named("l"), x.sqrt().named("s"))
    np.testing.assert_array_equal(r["l"], [np.nan, -np.inf, np.log(np.float32(4.0))])
    assert {(w["id"], w["kind"], w["count"]) for w in r.warnings} == {
        ("l", "nan", 1), ("l", "inf", 1), ("s", "nan", 1)}


EXAMPLE = {
    "inputs": {"x": {"data": [[1, 2], [3, 4]]},
               "w": {"data": [[0.5], [-0.25]], "requires_grad": True}},
    "nodes": [{"id": "h", "op": "matmul", "args": ["x", "w"]},
              {"id": "loss", "op": "sum", "args": ["h"]}],
    "grad": {"of": "loss"},
}


def edit(change):
    body = copy.deepcopy(EXAMPLE)
    change(body)
    return body


# A body, the client settings, and the class, status and code the server answers with.
ERRORS = [
    (edit(lambda b: b["nodes"][0].update(op="conv")), {}, E.ValidationError, 422, "unknown_op"),
    (edit(lambda b: b["nodes"][1].update(args=["q"])), {}, E.ValidationError, 422, "unknown_id"),
    (edit(lambda b: b["nodes"][1].update(id="h")), {}, E.ValidationError, 422, "duplicate_id"),
    (edit(lambda b: b["nodes"][0].update(args=["loss", "w"])), {}, E.ValidationError, 422,
     "cycle"),
    (edit(lambda b: b["nodes"][0].update(args=["w", "x"])), {}, E.ValidationError, 422,
     "shape_mismatch"),
    (edit(lambda b: b["grad"].update(of="h")), {}, E.ValidationError, 422, "seed_required"),
    (edit(lambda b: b["nodes"][1].update(attrs={"axis": 9})), {}, E.ValidationError, 422,
     "bad_attribute"),
    (edit(lambda b: b["inputs"]["x"].update(data=[[1, 2], [3]])), {}, E.ValidationError, 422,
     "bad_tensor"),
    (edit(lambda b: b.update(dtype="float16")), {}, E.ValidationError, 422, "validation_error"),
    (EXAMPLE, {"limits": Limits(max_elements=3)}, E.TooLargeError, 413, "tensor_too_large"),
    (EXAMPLE, {"limits": Limits(max_nodes=1)}, E.TooLargeError, 413, "graph_too_large"),
    (EXAMPLE, {"deadline_s": -1.0}, E.DeadlineError, 504, "deadline_exceeded"),
]


@pytest.mark.parametrize(("body", "settings", "cls", "status", "code"), ERRORS)
def test_engine_errors_raise_what_the_server_would(body, settings, cls, status, code):
    with pytest.raises(cls) as err, Client.local(**settings) as c:
        c.evaluate_json(body)
    e = err.value
    assert (e.status, e.code, e.problem["status"], e.problem["code"]) == (status, code,
                                                                          status, code)


def test_the_example_body_is_right_locally(local):
    r = local.evaluate_json(EXAMPLE)
    assert float(r["loss"]) == 1.0 * 0.5 + 2 * -0.25 + 3 * 0.5 + 4 * -0.25
    np.testing.assert_array_equal(r.grad("w"), [[4.0], [6.0]])


# ---- evaluate_many ----------------------------------------------------------------------

def test_evaluate_many_returns_results_in_order_for_every_form_of_request(local):
    pairs = [square_sum([float(k)]) for k in range(12)]
    requests = []
    for k, (x, y) in enumerate(pairs):
        requests.append([y, (y,), {"outputs": [y], "grad_of": y},
                         x.graph.to_json(y, grad_of=y)][k % 4])
    results = local.evaluate_many(requests, concurrency=4)
    assert [float(r["y"]) for r in results] == [float(k * k) for k in range(12)]
    assert [float(r.grad("x")[0]) for r in results[2::4]] == [4.0, 12.0, 20.0]
    assert local.evaluate_many([]) == []


def test_evaluate_many_raises_the_first_failure_or_returns_it(local):
    bad = edit(lambda b: b["nodes"][0].update(op="conv"))
    requests = [EXAMPLE, bad, EXAMPLE]
    with pytest.raises(E.ValidationError, match="conv"):
        local.evaluate_many(requests)
    results = local.evaluate_many(requests, return_exceptions=True)
    assert [type(r) for r in results] == [Result, E.ValidationError, Result]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stderr", "shown"), [(Terminal(), True), (io.StringIO(), False)])
def test_evaluate_many_shows_progress_only_on_a_terminal(local, monkeypatch, stderr, shown):
    monkeypatch.setattr(client.session, "PROGRESS_DELAY", 0)
    monkeypatch.setattr("sys.stderr", stderr)
    local.evaluate_many([EXAMPLE] * 3, concurrency=2)
    assert ("3/3" in stderr.getvalue()) is shown
    assert (stderr.getvalue() == "") is not shown


def test_the_readme_training_loop_fits_a_line(local):
    """Gradient descent by evaluating one graph again with new parameter values."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((32, 2))
    target = features @ np.array([[1.5], [-2.0]]) + 0.25
    g = Graph()
    x, y = g.input("x", features), g.input("y", target)
    w, b = g.parameter("w", np.zeros((2, 1))), g.parameter("b", np.zeros(1))
    loss = (x @ w + b).mse_loss(y)
    losses = []
    for _ in range(120):
        r = local.evaluate(loss, grad_of=loss, dtype="float64")
        losses.append(float(r[loss]))
        for p in g.parameters:
            p.value -= 0.1 * r.grad(p)
    assert losses[-1] < 1e-6 < losses[0] and losses == sorted(losses, reverse=True)
    np.testing.assert_allclose(w.value.ravel(), [1.5, -2.0], atol=1e-3)
    np.testing.assert_allclose(b.value, [0.25], atol=1e-3)
