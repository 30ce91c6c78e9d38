"""UM-Bridge 1.0 under /umbridge against a real gunicorn: what UM-Bridge's conformity suite
checks, said in our words, plus its Python client, emcee, and keys in the URL.

The bodies go out as UM-Bridge's own tools send them: JSON with no Content-Type at all
(requests' `data=`), indented or not.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import umbridge

from tests.conftest import Server
from tests.e2e.test_examples import run
from tests.service.test_models import examples_and_affine, write

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30
# Every model supports every feature (PROTOCOL.md §8 gives every derivative).
SUPPORTS = {"Evaluate": True, "Gradient": True, "ApplyJacobian": True, "ApplyHessian": True}
ERROR_BODY = {"type": "object", "required": ["error"], "additionalProperties": False}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return examples_and_affine(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def um(models_dir):
    with Server(models_dir=str(models_dir)) as s:
        s.um = s.url + "/umbridge"
        yield s


def post(um, endpoint: str, body) -> requests.Response:
    """As UM-Bridge's tools send: JSON text with no Content-Type header."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body, indent=4)
    return requests.post(f"{um.um}/{endpoint}", data=data, timeout=TIMEOUT)


def error(r: requests.Response, status: int, kind: str) -> str:
    """An UM-Bridge error: exactly {"error": {"type", "message"}}; the message returned."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["message", "type"], body
    assert body["error"]["type"] == kind and isinstance(body["error"]["message"], str), body
    return body["error"]["message"]


def sizes(um, name: str) -> tuple[list[int], list[int]]:
    i = post(um, "InputSizes", {"name": name}).json()["inputSizes"]
    o = post(um, "OutputSizes", {"name": name}).json()["outputSizes"]
    return i, o


MODELS = ["affine", "banana", "gauss"]


def test_info_says_protocol_1_0_and_lists_every_model(um):
    r = requests.get(um.um + "/Info", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"protocolVersion": 1.0, "models": MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_model_info_has_exactly_the_four_support_flags(um, name):
    r = post(um, "ModelInfo", {"name": name})
    assert r.status_code == 200 and r.json() == {"support": SUPPORTS}


@pytest.mark.parametrize("name, inputs, outputs", [
    ("affine", [6, 3], [2, 1]), ("banana", [2], [1]), ("gauss", [2], [1])])
def test_sizes_are_the_flattened_lengths_of_inputs_and_outputs(um, name, inputs, outputs):
    for endpoint, key, want in (("InputSizes", "inputSizes", inputs),
                                ("OutputSizes", "outputSizes", outputs)):
        r = post(um, endpoint, {"name": name, "config": {}})
        assert r.status_code == 200 and r.json() == {key: want}
        assert all(type(n) is int for n in r.json()[key])


@pytest.mark.parametrize("endpoint", ["ModelInfo", "InputSizes", "OutputSizes", "Evaluate",
                                      "Gradient", "ApplyJacobian", "ApplyHessian"])
def test_an_unknown_model_name_is_model_not_found_400(um, endpoint):
    error(post(um, endpoint, {"name": "wrong_model_name"}), 400, "ModelNotFound")


@pytest.mark.parametrize("name", MODELS)
def test_evaluate_returns_one_vector_per_output_of_its_size(um, name):
    ins, outs = sizes(um, name)
    r = post(um, "Evaluate", {"name": name, "input": [[0.0] * n for n in ins], "config": {}})
    assert r.status_code == 200 and list(r.json()) == ["output"]
    out = r.json()["output"]
    assert [len(v) for v in out] == outs
    assert all(isinstance(x, float) for v in out for x in v)


def test_evaluate_values_are_the_models(um):
    r = post(um, "Evaluate", {"name": "affine", "input": [[1, 0, 0, 0, 1, 0], [2, 3, 4]]})
    assert r.json() == {"output": [[2.5, 2.5], [12.5]]}  # y = [2, 3] + [0.5, -0.5]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("endpoint", ["Evaluate", "Gradient", "ApplyJacobian", "ApplyHessian"])
def test_input_vectors_one_too_long_are_invalid_input_400(um, name, endpoint):
    ins, outs = sizes(um, name)
    body = {"name": name, "input": [[0.0] * (n + 1) for n in ins], "outWrt": 0, "inWrt": 0,
            "inWrt1": 0, "inWrt2": 0, "sens": [0.0] * outs[0], "vec": [0.0] * ins[0]}
    error(post(um, endpoint, body), 400, "InvalidInput")


@pytest.mark.parametrize("name", MODELS)
def test_gradient_of_zero_sens_has_the_length_of_input_in_wrt(um, name):
    ins, outs = sizes(um, name)
    for in_wrt, n in enumerate(ins):
        r = post(um, "Gradient", {"name": name, "input": [[0.0] * k for k in ins],
                                  "outWrt": 0, "inWrt": in_wrt, "sens": [0.0] * outs[0]})
        assert r.status_code == 200 and list(r.json()) == ["output"]
        assert r.json()["output"] == [0.0] * n


@pytest.mark.parametrize("bad", [{"inWrt": 2}, {"inWrt": -1}, {"outWrt": 2}, {"outWrt": -1},
                                 {"inWrt": 0.0}, {"inWrt": True}, {"outWrt": "0"},
                                 {"sens": [0.0]}, {"sens": 0.0}])
def test_gradient_indexes_out_of_range_or_bad_sens_are_invalid_input(um, bad):
    body = {"name": "affine", "input": [[0.0] * 6, [0.0] * 3], "outWrt": 0, "inWrt": 0,
            "sens": [0.0, 0.0], **bad}
    error(post(um, "Gradient", body), 400, "InvalidInput")


def test_checks_run_in_umbridges_order(um):
    """Model, then feature, then the inputs, then outWrt, then inWrt, then the vectors."""
    bad_all = {"name": "nope", "input": [[0.0]], "outWrt": 9, "inWrt": 9, "sens": []}
    error(post(um, "Gradient", bad_all), 400, "ModelNotFound")
    msg = error(post(um, "Gradient", {**bad_all, "name": "affine"}), 400, "InvalidInput")
    assert "input" in msg
    ok_inputs = {**bad_all, "name": "affine", "input": [[0.0] * 6, [0.0] * 3]}
    assert "outWrt" in error(post(um, "Gradient", ok_inputs), 400, "InvalidInput")
    assert "inWrt" in error(post(um, "Gradient", {**ok_inputs, "outWrt": 1}), 400,
                            "InvalidInput")
    assert "sens" in error(post(um, "Gradient", {**ok_inputs, "outWrt": 1, "inWrt": 1}), 400,
                           "InvalidInput")


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"null", b'"name"'],
                         ids=["empty", "truncated", "a list", "null", "a string"])
def test_an_empty_or_non_object_body_is_invalid_input(um, body):
    error(post(um, "Evaluate", body), 400, "InvalidInput")


def test_non_finite_numbers_travel_as_bare_tokens_both_ways(um):
    r = post(um, "Evaluate", '{"name": "gauss", "input": [[NaN, Infinity]]}')
    assert r.status_code == 200 and b"NaN" in r.content
    assert math.isnan(json.loads(r.content)["output"][0][0])
    r = post(um, "Evaluate", '{"name": "gauss", "input": [[1.0, -Infinity]]}')
    assert json.loads(r.content)["output"] == [[-math.inf]] and b"-Infinity" in r.content


def test_get_on_a_post_endpoint_is_an_umbridge_error_not_a_500(um):
    r = requests.get(um.um + "/Evaluate", timeout=TIMEOUT)
    error(r, 405, "MethodNotAllowed")


# ---- UM-Bridge's Python client ----------------------------------------------------------

def numeric_jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences: J[i, j] = ∂f_i / ∂x_j."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * eps))
    return np.stack(cols, axis=-1)


@pytest.fixture(scope="module")
def affine(um):
    return umbridge.HTTPModel(um.um, "affine")


def test_the_client_reads_sizes_and_support(affine):
    assert affine.get_input_sizes() == [6, 3] and affine.get_output_sizes() == [2, 1]
    assert affine.supports_evaluate() and affine.supports_gradient()
    assert affine.supports_apply_jacobian() and affine.supports_apply_hessian()


POINT = [[0.3, -1.2, 0.5, 2.0, 0.1, -0.7], [1.5, -0.5, 0.25]]


def outputs(affine, params) -> list[np.ndarray]:
    return [np.array(v) for v in affine([list(map(float, p)) for p in params])]


def with_input(params, i: int, x) -> list:
    return [x if k == i else p for k, p in enumerate(params)]


@pytest.mark.parametrize("out_wrt, in_wrt", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gradient_is_jacobian_transpose_times_sens(affine, out_wrt, in_wrt):
    sens = [0.7, -1.3][: affine.get_output_sizes()[out_wrt]]
    got = affine.gradient(out_wrt, in_wrt, POINT, sens)
    J = numeric_jacobian(lambda x: outputs(affine, with_input(POINT, in_wrt, x))[out_wrt],
                         np.array(POINT[in_wrt]))
    np.testing.assert_allclose(got, J.T @ sens, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("out_wrt, in_wrt", [(0, 0), (0, 1), (1, 1)])
def test_apply_jacobian_is_jacobian_times_vec(affine, out_wrt, in_wrt):
    vec = np.linspace(-1, 1, affine.get_input_sizes()[in_wrt]).tolist()
    got = affine.apply_jacobian(out_wrt, in_wrt, POINT, vec)
    J = numeric_jacobian(lambda x: outputs(affine, with_input(POINT, in_wrt, x))[out_wrt],
                         np.array(POINT[in_wrt]))
    np.testing.assert_allclose(got, J @ vec, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("in_wrt1, in_wrt2", [(0, 0), (1, 1), (0, 1), (1, 0)])
def test_apply_hessian_is_a_block_of_the_hessian_times_vec(affine, in_wrt1, in_wrt2):
    sens = [0.7, -1.3]
    vec = np.linspace(-1, 1, affine.get_input_sizes()[in_wrt2]).tolist()
    got = affine.apply_hessian(0, in_wrt1, in_wrt2, POINT, sens, vec)

    def gradient(x):  # d(sens · y)/d input in_wrt1, as a function of input in_wrt2
        return affine.gradient(0, in_wrt1, with_input(POINT, in_wrt2, list(x)), sens)

    H = numeric_jacobian(gradient, np.array(POINT[in_wrt2]), eps=1e-5)
    np.testing.assert_allclose(got, H @ vec, rtol=1e-5, atol=1e-7)


def test_emcee_samples_the_banana_posterior_through_umbridge(um):
    done = run([sys.executable, "examples/python/emcee_banana.py"], um.url)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ") for line in done.stdout.splitlines())
    mean, std = json.loads(lines["mean"]), json.loads(lines["std"])
    assert len(mean) == 2 and all(np.isfinite(mean)) and all(s > 0 for s in std)
    assert 0.1 < float(lines["acceptance"]) < 0.95


# ---- keys -------------------------------------------------------------------------------

def test_with_keys_a_url_with_the_key_as_password_works_and_none_is_401(models_dir):
    with Server(models_dir=str(models_dir), api_keys="s3cret") as s:
        host = s.url.removeprefix("http://")
        r = requests.get(s.url + "/umbridge/Info", timeout=TIMEOUT)
        error(r, 401, "Unauthorized")
        model = umbridge.HTTPModel(f"http://:s3cret@{host}/umbridge", "gauss")
        assert model([[1.0, -1.0]]) == [[0.0]]
        r = requests.post(s.url + "/umbridge/Evaluate", timeout=TIMEOUT,
                          data='{"name": "gauss", "input": [[1, -1]]}',
                          headers={"Authorization": "Bearer s3cret"})
        assert r.json() == {"output": [[0.0]]}


def test_a_bad_model_file_stops_gunicorn_naming_it(tmp_path):
    write(tmp_path, broken={"inputs": {"x": {"shape": [2]}},
                            "nodes": [{"id": "y", "op": "exp", "args": ["z"]}]})
    with pytest.raises(RuntimeError) as e:
        Server(models_dir=str(tmp_path)).start()
    assert "broken.json" in str(e.value) and "/nodes/0/args/0" in str(e.value)
