"""PROTOCOL.md §8–§9 through the app: the four derivative members, /v1/shapes, their errors."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from tests.service.test_app import client, conforms, ok, problem

INPUTS = {"x": {"data": [[1, 2], [3, 4]]},
          "w": {"data": [[0.5], [-0.25]], "requires_grad": True},
          "b": {"shape": [1], "dtype": "float32", "b64": "AACAPw=="}}
NODES = [{"id": "h", "op": "matmul", "args": ["x", "w"]},
         {"id": "z", "op": "add", "args": ["h", "b"]},
         {"id": "a", "op": "sigmoid", "args": ["z"]},
         {"id": "loss", "op": "mean", "args": ["a"]}]
T = {"data": [[1], [0]]}
ALL_FOUR = {"inputs": INPUTS, "nodes": NODES, "outputs": ["loss", "a"],
            "grad": {"of": "loss", "wrt": ["w", "b"]},
            "jvp": {"tangents": {"w": T}, "of": ["loss", "a"]},
            "hvp": {"of": "loss", "tangents": {"w": T}},
            "jacobian": {"of": ["a"], "wrt": ["w", "b"]}, "dtype": "float64"}


@pytest.fixture(scope="module")
def app_client():
    return client()


@pytest.fixture(scope="module")
def openapi(app_client):
    return app_client.get("/openapi.json").get_json()


def arrays(member: dict) -> dict:
    return {k: np.array(v["data"]) for k, v in member.items()}


def test_all_four_in_one_request(app_client, openapi):
    body = ok(app_client.post("/v1/evaluate", json=ALL_FOUR))
    conforms(openapi, body, "EvaluateResponse")
    grads, jvp = arrays(body["gradients"]), arrays(body["jvp"])
    jac = {x: np.array(t["data"]) for x, t in body["jacobians"]["a"].items()}
    np.testing.assert_allclose(jvp["loss"], np.sum(grads["w"] * np.array(T["data"])))
    # rows of the Jacobian are the gradients of each element of a; J·t is jvp of a
    np.testing.assert_allclose(jac["w"].mean(axis=(0, 1)), grads["w"], rtol=1e-12)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", jac["w"], np.array(T["data"])),
                               jvp["a"], rtol=1e-12)
    assert jac["b"].shape == (2, 1, 1)
    # H·t for mean(sigmoid(x w + b)): ½ Σ_r s''(z_r) x_r x_rᵀ t
    x, z = np.array([[1.0, 2], [3, 4]]), np.array([[1.0], [1.5]])
    s = 1 / (1 + np.exp(-z))
    h = 0.5 * (x.T * (s * (1 - s) * (1 - 2 * s)).ravel()) @ x
    np.testing.assert_allclose(np.array(body["hvp"]["w"]["data"]), h @ np.array(T["data"]),
                               rtol=1e-12)


def test_a_v1_request_gets_a_v1_response(app_client):
    body = ok(app_client.post("/v1/evaluate", json={"inputs": INPUTS, "nodes": NODES,
                                                      "grad": {"of": "loss"}}))
    assert set(body) == {"outputs", "gradients", "warnings", "stats"}


def test_batched_seeds_are_rows_of_the_jacobian(app_client):
    seeds = np.eye(2).reshape(2, 2, 1)
    req = {"inputs": INPUTS, "nodes": NODES, "dtype": "float64",
           "grad": {"of": "a", "wrt": ["w"], "seed": {"data": seeds.tolist()}, "batch": True},
           "jacobian": {"of": ["a"], "wrt": ["w"]}}
    body = ok(app_client.post("/v1/evaluate", json=req))
    rows = np.array(body["gradients"]["w"]["data"])
    assert rows.shape == (2, 2, 1)
    np.testing.assert_allclose(rows, np.array(body["jacobians"]["a"]["w"]["data"]).reshape(2, 2, 1))


def test_batched_tangents(app_client):
    k = np.stack([np.array(T["data"]), np.array([[0], [1]])])
    req = {**ALL_FOUR, "jvp": {"tangents": {"w": {"data": k.tolist()}}, "batch": True,
                               "of": ["loss"]},
           "hvp": {"of": "loss", "tangents": {"w": {"data": k.tolist()}}, "batch": True}}
    body = ok(app_client.post("/v1/evaluate", json=req))
    one = ok(app_client.post("/v1/evaluate", json=ALL_FOUR))
    assert body["jvp"]["loss"]["shape"] == [2] and body["hvp"]["w"]["shape"] == [2, 2, 1]
    np.testing.assert_allclose(body["jvp"]["loss"]["data"][0], one["jvp"]["loss"]["data"])
    np.testing.assert_allclose(body["hvp"]["w"]["data"][0], one["hvp"]["w"]["data"])


SHAPES_CASES = {
    "all four": ALL_FOUR,
    "v1": {"inputs": INPUTS, "nodes": NODES, "grad": {"of": "loss"}},
    "base64, batched": {**ALL_FOUR, "encoding": "base64",
                        "jvp": {"tangents": {"w": {"data": [[[1], [0]]] * 3}}, "batch": True}},
}


@pytest.mark.parametrize("name", sorted(SHAPES_CASES))
def test_shapes_say_what_evaluate_returns(app_client, openapi, name):
    req = SHAPES_CASES[name]
    got = ok(app_client.post("/v1/evaluate", json=req))
    by_shape = copy.deepcopy(req)
    by_shape["inputs"]["x"] = {"shape": [2, 2]}  # a shape alone; nothing is computed
    shapes = ok(app_client.post("/v1/shapes", json=by_shape))
    conforms(openapi, shapes, "ShapesResponse")
    for member in ("outputs", "gradients", "jvp", "hvp"):
        want = {k: {"shape": t["shape"], "dtype": t["dtype"]}
                for k, t in got.get(member, {}).items()}
        assert shapes[member] == want, member
    want = {y: {x: {"shape": t["shape"], "dtype": t["dtype"]} for x, t in row.items()}
            for y, row in got.get("jacobians", {}).items()}
    assert shapes["jacobians"] == want
    assert set(shapes["nodes"]) == {"h", "z", "a", "loss"}
    assert shapes["nodes"]["h"] == {"op": "matmul", "shape": [2, 1],
                                    "dtype": req.get("dtype", "float32")}
    assert shapes["cost"]["response_bytes"] >= len(app_client.post(
        "/v1/evaluate", json=req).data) - 200  # stats and warnings are not costed
    assert shapes["cost"]["flops"] > 0 and shapes["cost"]["peak_bytes"] > 0


def test_a_shape_alone_is_for_shapes_only(app_client):
    req = {"inputs": {"x": {"shape": [3]}}, "nodes": [{"id": "y", "op": "sin", "args": ["x"]}]}
    problem(app_client.post("/v1/evaluate", json=req), 422, "validation_error")
    assert ok(app_client.post("/v1/shapes", json=req))["outputs"] == {
        "y": {"shape": [3], "dtype": "float32"}}


def test_shapes_refuse_a_huge_jacobian_in_milliseconds(app_client):
    req = {"inputs": {"x": {"shape": [10**6], "requires_grad": True}},
           "nodes": [{"id": "y", "op": "sin", "args": ["x"]}],
           "jacobian": {"of": ["y"], "wrt": ["x"]}}
    for path in ("/v1/shapes", "/v1/evaluate"):
        t0 = time.perf_counter()
        r = app_client.post(path, json=req)
        assert time.perf_counter() - t0 < 0.5
        if path == "/v1/shapes":
            assert problem(r, 413, "tensor_too_large")["errors"][0]["pointer"] == "/jacobian"
        else:  # the shape-only input is refused before any size is looked at
            problem(r, 422, "validation_error")


def bad(member: dict) -> dict:
    return {"inputs": INPUTS, "nodes": NODES, **member}


ERRORS = [
    (bad({"jvp": {"tangents": {"q": T}}}), 422, "unknown_id", "/jvp/tangents/q"),
    (bad({"jvp": {"tangents": {"h": T}}}), 422, "unknown_id", "/jvp/tangents/h"),
    (bad({"jvp": {"tangents": {"w": {"data": [1, 0]}}}}), 422, "shape_mismatch",
     "/jvp/tangents/w"),
    (bad({"jvp": {"tangents": {"w": T}, "batch": True}}), 422, "shape_mismatch",
     "/jvp/tangents/w"),
    (bad({"jvp": {"tangents": {"w": T}, "of": ["nope"]}}), 422, "unknown_id", "/jvp/of/0"),
    (bad({"hvp": {"of": "a", "tangents": {"w": T}}}), 422, "seed_required", "/hvp"),
    (bad({"hvp": {"of": "loss", "wrt": ["h"], "tangents": {"w": T}}}), 422, "unknown_id",
     "/hvp/wrt/0"),
    (bad({"hvp": {"of": "loss", "seed": {"data": [1, 2]}, "tangents": {"w": T}}}), 422,
     "shape_mismatch", "/hvp/seed"),
    (bad({"jacobian": {"of": ["a"], "wrt": ["z"]}}), 422, "unknown_id", "/jacobian/wrt/0"),
    (bad({"grad": {"of": "loss", "batch": True}}), 422, "seed_required", "/grad/seed"),
    (bad({"grad": {"of": "a", "seed": {"data": [[1], [2]]}, "batch": True}}), 422,
     "shape_mismatch", "/grad/seed"),
    (bad({"jvp": {"tangents": {"": T}}}), 422, "validation_error", "/jvp/tangents/"),
    (bad({"jvp": {"tangents": {"w": T}, "extra": 1}}), 422, "validation_error", "/jvp/extra"),
]


@pytest.mark.parametrize("path", ["/v1/evaluate", "/v1/shapes"])
@pytest.mark.parametrize("req, status, code, pointer", ERRORS,
                         ids=[e[3] + " " + e[2] for e in ERRORS])
def test_errors_have_code_and_pointer(app_client, path, req, status, code, pointer):
    body = problem(app_client.post(path, json=req), status, code)
    assert pointer in [e["pointer"] for e in body["errors"]]
