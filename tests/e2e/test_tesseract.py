"""The Tesseract runtime API under /tesseract/NAME against a real gunicorn, through the real
tesseract-core client, with references by finite differences."""

from __future__ import annotations

from pathlib import Path

import lz4.frame
import numpy as np
import pybase64
import pydantic
import pytest
import requests
from tesseract_core import Tesseract

from tests.conftest import Server
from tests.e2e.test_umbridge import numeric_jacobian
from tests.service.test_models import examples_and_affine

TIMEOUT = 30
rng = np.random.default_rng(7)
POINT = {"A": rng.normal(size=(2, 3)), "x": rng.normal(size=3)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(models_dir=str(examples_and_affine(tmp_path_factory.mktemp("models")))) as s:
        yield s


@pytest.fixture(scope="module")
def affine(server):
    return Tesseract.from_url(server.url + "/tesseract/affine")


def test_health_and_the_endpoints_the_client_reads(affine):
    assert affine.health() == {"status": "ok"}
    assert set(affine.available_endpoints) == {"health", "apply", "vector_jacobian_product",
                                               "jacobian", "jacobian_vector_product",
                                               "abstract_eval"}


def test_the_document_has_the_schemas_the_clients_read(affine):
    schemas = affine.openapi_schema["components"]["schemas"]
    assert list(schemas["Apply_InputSchema"]["properties"]) == ["A", "x"]
    assert list(schemas["Apply_OutputSchema"]["properties"]) == ["y", "loss"]
    assert schemas["ApplyInputSchema"]["differentiable_arrays"] == {
        "A": {"shape": [2, 3], "dtype": "float64"}, "x": {"shape": [3], "dtype": "float64"}}
    assert schemas["ApplyOutputSchema"]["differentiable_arrays"] == {
        "y": {"shape": [2], "dtype": "float64"}, "loss": {"shape": [], "dtype": "float64"}}


def test_apply_gives_the_outputs_as_arrays(affine):
    out = affine.apply(POINT)
    y = POINT["A"] @ POINT["x"] + [0.5, -0.5]
    assert set(out) == {"y", "loss"} and out["y"].dtype == np.float64
    np.testing.assert_allclose(out["y"], y, rtol=1e-12)
    np.testing.assert_allclose(out["loss"], y @ y, rtol=1e-12)


@pytest.mark.parametrize("outputs", [["y"], ["loss"], ["y", "loss"]])
def test_vjp_is_the_sum_of_cotangent_transpose_jacobian(affine, outputs):
    cot = {"y": np.array([0.7, -1.3]), "loss": np.array(0.4)}
    got = affine.vector_jacobian_product(POINT, ["A", "x"], outputs,
                                         {k: cot[k] for k in outputs})
    for name in ("A", "x"):
        want = np.zeros(POINT[name].size)
        for out in outputs:
            def f(v, name=name, out=out):
                point = {**POINT, name: v.reshape(POINT[name].shape)}
                return np.reshape(affine.apply(point)[out], -1)
            J = numeric_jacobian(f, POINT[name].reshape(-1))
            want += J.T @ np.reshape(cot[out], -1)
        np.testing.assert_allclose(got[name].reshape(-1), want, rtol=1e-6, atol=1e-8)


def test_jvp_and_jacobian_match_finite_differences(affine):
    t = {"x": np.array([0.2, -0.4, 1.0])}
    got = affine.jacobian_vector_product(POINT, ["x"], ["y"], t)

    def f(v):
        return affine.apply({**POINT, "x": v})["y"]

    J = numeric_jacobian(f, POINT["x"])
    np.testing.assert_allclose(got["y"], J @ t["x"], rtol=1e-6)
    jac = affine.jacobian(POINT, ["x"], ["y"])
    np.testing.assert_allclose(jac["y"]["x"], J, rtol=1e-6)


def test_abstract_eval_gives_output_shapes(affine):
    assert affine.abstract_eval({"A": {"shape": [2, 3], "dtype": "float64"},
                                 "x": {"shape": [3], "dtype": "float64"}}) == {
        "y": {"shape": [2], "dtype": "float64"}, "loss": {"shape": [], "dtype": "float64"}}


def test_encodings_json_base64_and_lz4_when_asked(server, affine):
    url = server.url + "/tesseract/affine/apply"
    body = {"inputs": {"A": POINT["A"].tolist(),  # plain JSON lists are arrays too
                       "x": {"shape": [3], "dtype": "float32", "data": {
                           "buffer": pybase64.b64encode(POINT["x"].astype("<f4")).decode(),
                           "encoding": "base64"}}}}
    x32 = POINT["x"].astype(np.float32).astype(np.float64)
    y = POINT["A"] @ x32 + [0.5, -0.5]
    for accept, check in [
        (None, lambda d: np.frombuffer(pybase64.b64decode(d["buffer"]), "<f8")),
        ("application/json", lambda d: np.array(d["buffer"])),
        ("application/json+base64; gpu_transport=none; compression=lz4",
         lambda d: np.frombuffer(lz4.frame.decompress(pybase64.b64decode(d["buffer"])), "<f8")),
    ]:
        r = requests.post(url, json=body, headers={"Accept": accept} if accept else {},
                          timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        out = r.json()["y"]
        assert out["object_type"] == "array" and out["shape"] == [2]
        assert ("compression" in out["data"]) == ("lz4" in (accept or ""))
        np.testing.assert_allclose(check(out["data"]), y, rtol=1e-12)
    lz4_view = affine.with_encoding(compression="lz4")
    np.testing.assert_allclose(lz4_view.apply(POINT)["y"], POINT["A"] @ POINT["x"] + [.5, -.5])


@pytest.mark.parametrize("inputs, loc", [
    ({"A": POINT["A"]}, ["body", "inputs", "x"]),
    ({**POINT, "z": np.zeros(1)}, ["body", "inputs", "z"]),
    ({**POINT, "x": np.zeros(4)}, ["body", "inputs", "x"]),
])
def test_bad_inputs_are_422_with_a_detail_list(server, affine, inputs, loc):
    with pytest.raises(pydantic.ValidationError) as e:
        affine.apply(inputs)
    (err,) = e.value.errors()
    assert list(err["loc"]) == loc


def test_422_and_404_bodies_are_fastapis(server):
    r = requests.post(server.url + "/tesseract/affine/apply", json={"inputs": {"A": [[1]]}},
                      timeout=TIMEOUT)
    assert r.status_code == 422
    (item,) = r.json()["detail"]
    assert set(item) == {"type", "loc", "msg"} and item["loc"][:2] == ["body", "inputs"]
    r = requests.get(server.url + "/tesseract/nope/health", timeout=TIMEOUT)
    assert r.status_code == 404 and isinstance(r.json()["detail"], str)
    r = requests.post(server.url + "/tesseract/affine/apply", data=b"{", timeout=TIMEOUT)
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)


def test_with_keys_the_client_sends_the_key_in_the_url(tmp_path):
    folder = examples_and_affine(Path(tmp_path))
    with Server(models_dir=str(folder), api_keys="s3cret") as s:
        host = s.url.removeprefix("http://")
        r = requests.get(s.url + "/tesseract/gauss/health", timeout=TIMEOUT)
        assert r.status_code == 401 and "detail" in r.json()
        t = Tesseract.from_url(f"http://:s3cret@{host}/tesseract/gauss")
        assert t.apply({"theta": np.array([1.0, -1.0])})["logp"] == 0.0
