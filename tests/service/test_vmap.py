"""PROTOCOL.md §11 through the app: `vmap` on /v1/evaluate and /v1/shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.test_app import client, ok, problem
from tests.service.test_derivatives import INPUTS, NODES

B = 4
X = np.arange(B * 4.0).reshape(B, 2, 2) / 10


@pytest.fixture(scope="module")
def app_client():
    return client()


def batched(**members) -> dict:
    inputs = {**INPUTS, "x": {"data": X.tolist()}}
    return {"inputs": inputs, "nodes": NODES, "outputs": ["loss", "a"], "dtype": "float64",
            "vmap": {"inputs": ["x"]}, **members}


def test_each_slice_is_its_own_request(app_client):
    members = {"grad": {"of": "loss", "wrt": ["w", "b"]},
               "jvp": {"tangents": {"w": {"data": [[1], [0]]}}, "of": ["loss"]},
               "hvp": {"of": "loss", "tangents": {"w": {"data": [[1], [0]]}}},
               "jacobian": {"of": ["a"], "wrt": ["w"]}}
    body = ok(app_client.post("/v1/evaluate", json=batched(**members)))
    assert body["gradients"]["w"]["shape"] == [B, 2, 1]
    assert body["jacobians"]["a"]["w"]["shape"] == [B, 2, 1, 2, 1]
    for i in range(B):
        one = {**batched(**members), "inputs": {**INPUTS, "x": {"data": X[i].tolist()}}}
        del one["vmap"]
        want = ok(app_client.post("/v1/evaluate", json=one))
        for member in ("outputs", "gradients", "jvp", "hvp"):
            for k, t in want[member].items():
                np.testing.assert_allclose(np.array(body[member][k]["data"])[i], t["data"],
                                           rtol=1e-12, err_msg=f"{member} {k}")
        np.testing.assert_allclose(np.array(body["jacobians"]["a"]["w"]["data"])[i],
                                   want["jacobians"]["a"]["w"]["data"], rtol=1e-12)


def test_shapes_of_a_vmapped_request(app_client):
    req = batched(grad={"of": "loss"})
    req["inputs"]["x"] = {"shape": [B, 2, 2]}
    body = ok(app_client.post("/v1/shapes", json=req))
    assert body["outputs"]["loss"]["shape"] == [B]
    assert body["gradients"]["w"]["shape"] == [B, 2, 1]
    assert body["nodes"]["h"]["shape"] == [B, 2, 1]


@pytest.mark.parametrize("vmap, status, code, pointer", [
    ({"inputs": ["nope"]}, 422, "unknown_id", "/vmap/inputs/0"),
    ({"inputs": []}, 422, "validation_error", "/vmap/inputs"),
    ({"inputs": ["x", "w"]}, 422, "shape_mismatch", "/vmap/inputs"),
])
def test_errors(app_client, vmap, status, code, pointer):
    body = problem(app_client.post("/v1/evaluate", json={**batched(), "vmap": vmap}),
                   status, code)
    assert pointer in [e["pointer"] for e in body["errors"]]
