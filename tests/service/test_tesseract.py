"""Hostile input on the Tesseract routes, one table: each is FastAPI's error body with its
status, never a 500, and the model answers right after."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.app import create_app
from service.config import Settings
from tests.service.test_models import examples_and_affine
from tests.service.test_umbridge import ROOT

GOOD = {"inputs": {"theta": [0.5, 0.5]}}


@pytest.fixture(scope="module")
def c():
    return create_app(Settings(models_dir=str(ROOT / "models"), max_elements=10_000)
                      ).test_client()


def theta(**array) -> dict:
    base = {"shape": [2], "dtype": "float64", "data": {"buffer": "AAAAAAAA4D8AAAAAAADgPw==",
                                                       "encoding": "base64"}}
    return {"inputs": {"theta": {**base, **array}}}


HOSTILE = [
    # name, endpoint, body, status
    ("not JSON", "apply", b"{", 400),
    ("a list", "apply", [1, 2], 422),
    ("no inputs", "apply", {}, 422),
    ("inputs a list", "apply", {"inputs": [1]}, 422),
    ("bad base64", "apply", theta(data={"buffer": "!!", "encoding": "base64"}), 422),
    ("buffer too short", "apply", theta(shape=[3]), 422),
    ("a complex dtype", "apply", theta(dtype="complex128"), 422),
    ("an object dtype", "apply", theta(dtype="O"), 422),
    ("a made-up dtype", "apply", theta(dtype="float1024"), 422),
    ("a negative shape", "apply", theta(shape=[-2]), 422),
    ("a huge shape", "apply", theta(shape=[10**12]), 422),
    ("a huge json array", "apply", theta(shape=[10**6], data={"buffer": [0.0],
                                                              "encoding": "json"}), 422),
    ("an unknown encoding", "apply", theta(data={"buffer": "x", "encoding": "pickle"}), 422),
    ("bad lz4", "apply", theta(data={"buffer": "AAAA", "encoding": "base64",
                                     "compression": "lz4"}), 422),
    ("data not an object", "apply", theta(data=[1, 2]), 422),
    ("strings in a json buffer", "apply", theta(data={"buffer": ["a", 1], "encoding": "json"}),
     422),
    ("vjp of an unknown output", "vector_jacobian_product",
     {**GOOD, "vjp_inputs": ["theta"], "vjp_outputs": ["nope"], "cotangent_vector": {}}, 422),
    ("vjp without cotangents", "vector_jacobian_product",
     {**GOOD, "vjp_inputs": ["theta"], "vjp_outputs": ["logp"]}, 422),
    ("vjp inputs not a list", "vector_jacobian_product",
     {**GOOD, "vjp_inputs": "theta", "vjp_outputs": ["logp"], "cotangent_vector": {}}, 422),
    ("a cotangent of another shape", "vector_jacobian_product",
     {**GOOD, "vjp_inputs": ["theta"], "vjp_outputs": ["logp"],
      "cotangent_vector": {"logp": [1.0, 2.0]}}, 422),
    ("abstract inputs of another shape", "abstract_eval",
     {"inputs": {"theta": {"shape": [3], "dtype": "float64"}}}, 422),
]


@pytest.mark.parametrize("name, endpoint, body, status", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_fastapis_error(c, name, endpoint, body, status):
    data = body if isinstance(body, bytes) else json.dumps(body)
    r = c.post(f"/tesseract/banana/{endpoint}", data=data, content_type="application/json")
    assert r.status_code == status, r.data[:300]
    detail = json.loads(r.data)["detail"]
    if status == 422:
        assert all(set(d) == {"type", "loc", "msg"} and d["loc"][0] == "body" for d in detail)
    else:
        assert isinstance(detail, str)
    assert "Traceback" not in r.get_data(as_text=True)
    after = c.post("/tesseract/banana/apply", data=json.dumps(GOOD),
                   content_type="application/json")
    assert after.status_code == 200 and json.loads(after.data)["logp"]["shape"] == []


# ---- a VJP over several outputs: one pass, each cotangent of its output's exact shape ------

@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """A client of a server with the example models and `affine` (outputs y (2,), loss ())."""
    folder = examples_and_affine(tmp_path_factory.mktemp("models"))
    return create_app(Settings(models_dir=str(folder))).test_client()


POINT = {"A": [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]], "x": [0.2, -0.4, 1.0]}


def vjp(c, cotangents: dict) -> tuple[int, dict]:
    body = {"inputs": POINT, "vjp_inputs": ["A", "x"], "vjp_outputs": list(cotangents),
            "cotangent_vector": cotangents}
    r = c.post("/tesseract/affine/vector_jacobian_product", data=json.dumps(body),
               content_type="application/json", headers={"Accept": "application/json"})
    return r.status_code, json.loads(r.data)


def test_a_vjp_over_two_outputs_is_the_sum_of_the_two(two_outputs):
    both = vjp(two_outputs, {"y": [0.7, -1.3], "loss": 0.4})
    y_only, loss_only = vjp(two_outputs, {"y": [0.7, -1.3]}), vjp(two_outputs, {"loss": 0.4})
    assert both[0] == y_only[0] == loss_only[0] == 200, both
    for k in ("A", "x"):
        total = (np.asarray(y_only[1][k]["data"]["buffer"])
                 + np.asarray(loss_only[1][k]["data"]["buffer"]))
        np.testing.assert_allclose(both[1][k]["data"]["buffer"], total, rtol=1e-12)


@pytest.mark.parametrize("cotangent", [[1.0], 0.5, [0.7, -1.3, 2.0], [[0.7, -1.3]]],
                         ids=["shape [1]", "a scalar", "shape [3]", "shape [1, 2]"])
def test_a_cotangent_not_of_its_outputs_shape_is_refused_not_broadcast(two_outputs, cotangent):
    status, doc = vjp(two_outputs, {"y": cotangent, "loss": 0.4})
    assert status == 422, doc
    assert doc["detail"][0]["loc"] == ["body", "cotangent_vector", "y"], doc
