"""The Flask app through its test client: every endpoint of PROTOCOL.md §1/§5, every error."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import orjson
import pydantic
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from autograd import OPS
from service.app import create_app
from service.config import Settings
from service.errors import CODES
from service.schemas import TensorIn
from tests.service.test_codec import strict_loads

PROBLEM = "application/problem+json"
CANARY = 31415.92  # a value put in request tensors that no error body may echo


def client(**settings):
    return create_app(Settings(**settings)).test_client()


@pytest.fixture(scope="module")
def app_client():
    return client()


@pytest.fixture(scope="module")
def openapi(app_client):
    return strict_loads(app_client.get("/openapi.json").data)


def conforms(openapi: dict, body, schema: str) -> None:
    """Validate a body against one of the OpenAPI document's own component schemas."""
    OAS31Validator({"$ref": f"#/components/schemas/{schema}",
                    "components": openapi["components"]}).validate(body)


def ok(r) -> dict:
    assert r.status_code == 200, r.data[:500]
    assert r.mimetype == "application/json"
    return strict_loads(r.data)


def problem(r, status: int, code: str) -> dict:
    """The response is problem+json with this status and code, and leaks nothing."""
    assert (r.status_code, r.mimetype) == (status, PROBLEM), r.data[:500]
    body = strict_loads(r.data)
    assert (body["status"], body["code"], body["type"]) == (status, code, "about:blank")
    assert body["title"] and body["detail"]
    assert set(body) <= {"type", "title", "status", "code", "detail", "errors"}
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    assert str(CANARY) not in text and "31415" not in text
    return body


def pointers(body: dict) -> list[str]:
    return [e["pointer"] for e in body.get("errors", [])]


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def example_expected(seed=None, x=((1, 2), (3, 4))):
    """PROTOCOL.md §1 computed independently in float64 NumPy: values and gradients."""
    x = np.array(x, np.float64)
    w = np.array([[0.5], [-0.25]])
    b = np.array([1.0])
    h = x @ w
    z = h + b
    a = sigmoid(z)
    loss = a.mean()
    ga = np.full_like(a, 1 / a.size) if seed is None else np.asarray(seed, np.float64)
    gz = ga * a * (1 - a)
    return {"loss": loss, "a": a, "z": z, "h": h, "w": x.T @ gz, "b": gz.sum(axis=0),
            "gz": gz, "gh": gz}


def decode_any(t: dict) -> np.ndarray:
    """A response tensor as an array, decoded here rather than by the service's codec."""
    shape = tuple(t["shape"])
    if "b64" in t:
        return np.frombuffer(base64.b64decode(t["b64"]), "<" + {"float32": "f4",
                             "float64": "f8"}[t["dtype"]]).reshape(shape)
    values = np.array(t["data"], dtype=object)
    for text, v in {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.items():
        values[values == text] = v
    return values.astype(t["dtype"]).reshape(shape)


def assert_f32(got: dict, expected, shape):
    """A float32 response tensor of this shape agrees with the float64 answer at float32
    precision."""
    assert (got["dtype"], tuple(got["shape"])) == ("float32", tuple(shape))
    np.testing.assert_allclose(decode_any(got), expected, rtol=2e-7, atol=1e-7)


# ---- POST /v1/evaluate: PROTOCOL.md §1 --------------------------------------------------

def test_the_protocol_example(app_client, example, openapi):
    body = ok(app_client.post("/v1/evaluate", json=example))
    conforms(openapi, body, "EvaluateResponse")
    want = example_expected()
    assert list(body["outputs"]) == ["loss", "a"] and list(body["gradients"]) == ["w", "b"]
    assert_f32(body["outputs"]["loss"], want["loss"], ())
    assert isinstance(body["outputs"]["loss"]["data"], float)  # a 0-d tensor is a bare number
    assert_f32(body["outputs"]["a"], want["a"], (2, 1))
    assert_f32(body["gradients"]["w"], want["w"], (2, 1))
    assert_f32(body["gradients"]["b"], want["b"], (1,))
    assert body["warnings"] == []
    assert body["stats"]["nodes"] == 4
    assert body["stats"]["forward_ms"] >= 0 and body["stats"]["backward_ms"] >= 0
    assert "expanded" not in body  # only with expr


def test_the_protocol_example_as_one_expression(app_client, example, openapi):
    del example["nodes"], example["outputs"]
    example["expr"] = {"loss": "mean(sigmoid(x @ w + b))"}
    body = ok(app_client.post("/v1/evaluate", json=example))
    conforms(openapi, body, "EvaluateResponse")
    want = example_expected()
    assert list(body["outputs"]) == ["loss"]  # generated nodes are not default outputs
    assert_f32(body["outputs"]["loss"], want["loss"], ())
    assert_f32(body["gradients"]["w"], want["w"], (2, 1))
    assert_f32(body["gradients"]["b"], want["b"], (1,))
    assert [(n["id"], n["op"]) for n in body["expanded"]] == [
        ("loss:1", "matmul"), ("loss:2", "add"), ("loss:3", "sigmoid"), ("loss", "mean")]


def test_expr_and_nodes_name_each_other_and_generated_ids_can_be_asked_for(app_client, example):
    example["nodes"] = example["nodes"][:2]  # h = x @ w, z = h + b
    example["expr"] = {"loss": "mean(a)", "a": "sigmoid(z)", "twice": "2 * loss"}
    example["outputs"] = ["loss", "a", "twice"]
    example["grad"]["wrt"] = ["w", "b", "z"]
    body = ok(app_client.post("/v1/evaluate", json=example))
    want = example_expected()
    assert_f32(body["outputs"]["loss"], want["loss"], ())
    assert_f32(body["outputs"]["twice"], 2 * want["loss"], ())
    assert_f32(body["gradients"]["w"], want["w"], (2, 1))
    assert list(body["gradients"]) == ["w", "b", "z"]
    example["expr"] = {"loss": "mean(sigmoid(-z))"}
    example["outputs"], example["grad"]["wrt"] = ["loss:1"], ["loss:2"]  # neg, sigmoid
    body = ok(app_client.post("/v1/evaluate", json=example))
    assert [n["id"] for n in body["expanded"]] == ["loss:1", "loss:2", "loss"]
    assert body["outputs"]["loss:1"]["shape"] == [2, 1]


def test_shapes_lists_the_nodes_an_expr_expanded_to(app_client, example, openapi):
    del example["nodes"], example["outputs"]
    example["inputs"]["x"] = {"shape": [2, 2]}  # a shape alone
    example["expr"] = {"loss": "mean(sigmoid(x @ w + b))"}
    body = ok(app_client.post("/v1/shapes", json=example))
    conforms(openapi, body, "ShapesResponse")
    assert {k: (v["op"], v["shape"]) for k, v in body["nodes"].items()} == {
        "loss:1": ("matmul", [2, 1]), "loss:2": ("add", [2, 1]), "loss:3": ("sigmoid", [2, 1]),
        "loss": ("mean", [])}
    assert [n["id"] for n in body["expanded"]] == ["loss:1", "loss:2", "loss:3", "loss"]
    example["expr"] = {"loss": "mean(sigmoid(x @ b + w))"}
    body = problem(app_client.post("/v1/shapes", json=example), 422, "shape_mismatch")
    assert body["errors"][0]["pointer"] == "/expr/loss" and body["errors"][0]["column"] == 16


def test_an_expr_error_carries_its_column(app_client, example, openapi):
    example["expr"] = {"y": "sum(x, axis=\"a\")"}
    body = problem(app_client.post("/v1/evaluate", json=example), 422, "bad_attribute")
    conforms(openapi, body, "Problem")
    assert body["errors"] == [{"pointer": "/expr/y", "column": 13, "detail": body["detail"]}]
    assert "column 13" in body["detail"]


@pytest.mark.parametrize("encoding", ["nested", "flat", "base64"])
def test_response_encodings_decode_to_the_same_arrays(app_client, example, encoding):
    """Bit for bit: so nested and flat numbers are float32 values written in full."""
    nested = ok(app_client.post("/v1/evaluate", json=example))
    example["encoding"] = encoding
    body = ok(app_client.post("/v1/evaluate", json=example))
    for part in ("outputs", "gradients"):
        for name, t in body[part].items():
            ref = nested[part][name]
            assert (t["shape"], t["dtype"]) == (ref["shape"], ref["dtype"])
            assert ("b64" in t) == (encoding == "base64")
            assert (t.get("encoding") == "flat") == (encoding == "flat")
            if encoding == "flat":
                assert isinstance(t["data"], list) and not any(
                    isinstance(v, list) for v in t["data"])
            assert decode_any(t).tobytes() == decode_any(ref).tobytes()


def test_float64_is_honoured_end_to_end(app_client, example):
    example["dtype"] = "float64"
    example["inputs"]["b"] = {"shape": [1], "dtype": "float64",
                              "b64": base64.b64encode(np.float64([1.0]).tobytes()).decode()}
    x = [[1, 2], [3, 4 + 1e-12]]  # the 1e-12 moves loss by 2.4e-14 relative: lost in float32
    example["inputs"]["x"]["data"] = x
    want = example_expected(x=x)
    body = ok(app_client.post("/v1/evaluate", json=example))
    for part in ("outputs", "gradients"):
        assert {t["dtype"] for t in body[part].values()} == {"float64"}
    np.testing.assert_allclose(body["outputs"]["loss"]["data"], want["loss"], rtol=4e-15)
    np.testing.assert_allclose(decode_any(body["gradients"]["w"]), want["w"], rtol=4e-15)
    np.testing.assert_allclose(decode_any(body["gradients"]["b"]), want["b"], rtol=4e-15)
    # a value float32 cannot hold comes back exactly, in every encoding
    for encoding in ("nested", "flat", "base64"):
        same = {"inputs": {"x": {"data": [0.1, 1 / 3]}},
                "nodes": [{"id": "y", "op": "mul", "args": ["x", 1]}],
                "dtype": "float64", "encoding": encoding}
        got = decode_any(ok(app_client.post("/v1/evaluate", json=same))["outputs"]["y"])
        assert got.dtype == np.float64 and got.tolist() == [0.1, 1 / 3]


def test_nonfinite_inputs_and_outputs_both_ways(app_client):
    body = {"inputs": {"x": {"data": ["NaN", "Infinity", "-Infinity", 2]},
                       "y": {"shape": [2, 2], "data": [1, "-Infinity", "NaN", 0]}},
            "nodes": [{"id": "s", "op": "add", "args": ["x", 0]},
                      {"id": "t", "op": "mul", "args": ["y", -1]}]}
    for encoding in ("nested", "flat", "base64"):
        out = ok(app_client.post("/v1/evaluate", json=dict(body, encoding=encoding)))["outputs"]
        np.testing.assert_array_equal(decode_any(out["s"]), [np.nan, np.inf, -np.inf, 2])
        np.testing.assert_array_equal(decode_any(out["t"]), [[-1, np.inf], [np.nan, -0.0]])
    out = ok(app_client.post("/v1/evaluate", json=body))["outputs"]
    assert out["s"]["data"] == ["NaN", "Infinity", "-Infinity", 2.0]


def test_warnings_for_nonfinite_outputs(app_client):
    body = {"inputs": {"x": {"data": [-1, 0, 1, -2]}},
            "nodes": [{"id": "y", "op": "log", "args": ["x"]}]}
    got = ok(app_client.post("/v1/evaluate", json=body))
    assert got["outputs"]["y"]["data"][:3] == ["NaN", "-Infinity", 0.0]
    found = {(w["id"], w["kind"]): w.get("count") for w in got["warnings"]}
    assert found == {("y", "nan"): 2, ("y", "inf"): 1}
    assert not any("op" in w for w in got["warnings"])  # anomaly entries only when asked


def test_anomaly_names_the_first_bad_node_forward_and_backward(app_client):
    body = {"inputs": {"x": {"data": [0, 4], "requires_grad": True}},
            "nodes": [{"id": "y", "op": "sqrt", "args": ["x"]},
                      {"id": "s", "op": "sum", "args": ["y"]},
                      {"id": "l", "op": "log", "args": ["x"]},
                      {"id": "m", "op": "neg", "args": ["l"]}],
            "outputs": ["s", "m"], "grad": {"of": "s"}, "anomaly": True}
    got = ok(app_client.post("/v1/evaluate", json=body))
    anomalies = [w for w in got["warnings"] if "op" in w]
    assert {"id": "l", "op": "log", "phase": "forward", "kind": "inf"} in anomalies
    assert {"id": "y", "op": "sqrt", "phase": "backward", "kind": "inf"} in anomalies
    assert len(anomalies) == 2  # the first per phase; m inherits l's -inf and is not named
    counted = {(w["id"], w["kind"]) for w in got["warnings"] if "count" in w}
    assert counted == {("m", "inf"), ("x", "inf")}
    assert decode_any(got["gradients"]["x"])[0] == np.inf


OVERFLOW = [
    # name, body: values past float32's range become ±Infinity, as in NumPy, without log noise
    ("nested input", {"inputs": {"x": {"data": [1e39, 1]}},
                      "nodes": [{"id": "y", "op": "neg", "args": ["x"]}]}),
    ("float64 bytes into float32", {"inputs": {"x": {"shape": [1], "dtype": "float64",
                                                     "b64": base64.b64encode(
                                                         np.float64([-1e300])).decode()}},
                                    "nodes": [{"id": "y", "op": "neg", "args": ["x"]}]}),
    ("seed", {"inputs": {"x": {"data": [1.0], "requires_grad": True}},
              "nodes": [{"id": "y", "op": "neg", "args": ["x"]}],
              "grad": {"of": "y", "seed": {"data": [1e39]}}}),
]


@pytest.mark.parametrize("body", [r[1] for r in OVERFLOW], ids=[r[0] for r in OVERFLOW])
def test_overflow_is_infinity_with_a_warning_not_log_noise(app_client, body):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ok(app_client.post("/v1/evaluate", json=body))
    assert [str(w.message) for w in caught] == []
    assert {w["kind"] for w in got["warnings"]} == {"inf"}


def test_outputs_default_to_nodes_no_other_node_uses(app_client):
    body = {"inputs": {"x": {"data": [1.0, 2.0]}},
            "nodes": [{"id": "c", "op": "sin", "args": ["a"]},
                      {"id": "a", "op": "neg", "args": ["x"]},
                      {"id": "b", "op": "exp", "args": ["a"]},
                      {"id": "d", "op": "sum", "args": ["b"]}]}
    got = ok(app_client.post("/v1/evaluate", json=body))
    assert set(got["outputs"]) == {"c", "d"}
    np.testing.assert_allclose(decode_any(got["outputs"]["c"]), np.sin([-1.0, -2.0]), rtol=1e-6)
    assert got["gradients"] == {}


def test_wrt_defaults_to_inputs_with_requires_grad(app_client, example):
    example["inputs"]["b"]["requires_grad"] = True
    example["inputs"]["x"]["requires_grad"] = False
    del example["grad"]["wrt"]
    got = ok(app_client.post("/v1/evaluate", json=example))
    assert set(got["gradients"]) == {"w", "b"}
    want = example_expected()
    assert_f32(got["gradients"]["b"], want["b"], (1,))


@pytest.mark.parametrize("wrt", ["default", "empty"])
def test_grad_with_nothing_to_differentiate_is_a_warning(app_client, example, openapi, wrt):
    del example["inputs"]["w"]["requires_grad"]
    change(example, "grad/wrt", DROP if wrt == "default" else [])
    got = ok(app_client.post("/v1/evaluate", json=example))
    conforms(openapi, got, "EvaluateResponse")
    assert got["gradients"] == {} and set(got["outputs"]) == {"loss", "a"}
    (warning,) = got["warnings"]
    assert warning["id"] == "loss" and warning["kind"] == "nothing_to_differentiate"
    assert "requires_grad: true" in warning["detail"]


def test_gradients_wrt_intermediate_nodes_and_an_unrelated_input(app_client, example):
    example["inputs"]["u"] = {"data": [[CANARY, 2, 3]], "requires_grad": True}
    example["grad"]["wrt"] = ["z", "h", "u", "x"]
    got = ok(app_client.post("/v1/evaluate", json=example))["gradients"]
    want = example_expected()
    assert_f32(got["z"], want["gz"], (2, 1))
    assert_f32(got["h"], want["gh"], (2, 1))
    assert got["u"] == {"shape": [1, 3], "dtype": "float32", "data": [[0.0, 0.0, 0.0]]}
    assert_f32(got["x"], want["gz"] @ np.array([[0.5, -0.25]]), (2, 2))


def test_seed_for_a_non_scalar_of(app_client, example):
    seed = [[1.0], [-2.0]]
    example["grad"] = {"of": "a", "seed": {"data": seed}, "wrt": ["w", "b"]}
    got = ok(app_client.post("/v1/evaluate", json=example))["gradients"]
    want = example_expected(seed)
    assert_f32(got["w"], want["w"], (2, 1))
    assert_f32(got["b"], want["b"], (1,))
    example["grad"]["seed"] = {"shape": [2, 1], "dtype": "float64",
                               "b64": base64.b64encode(np.float64(seed).tobytes()).decode()}
    again = ok(app_client.post("/v1/evaluate", json=example))["gradients"]
    assert again == got


def test_a_broadcast_gradient_has_its_inputs_shape(app_client):
    body = {"inputs": {"x": {"data": [[1, 2, 3], [4, 5, 6]]},
                       "c": {"data": [[10]], "requires_grad": True}},
            "nodes": [{"id": "y", "op": "mul", "args": ["x", "c"]},
                      {"id": "s", "op": "sum", "args": ["y"]}],
            "grad": {"of": "s"}}
    got = ok(app_client.post("/v1/evaluate", json=body))["gradients"]
    assert got["c"] == {"shape": [1, 1], "dtype": "float32", "data": [[21.0]]}


# ---- every error a request can cause -----------------------------------------------------

DROP = object()


def change(body: dict, path: str, value) -> None:
    """Set (or with DROP delete) the member at a slash-separated path of the body."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    target = body
    for p in parents:
        target = target[p]
    if value is DROP:
        del target[last]
    else:
        target[last] = value


def _b64(values) -> dict:
    a = np.asarray(values, "<f4")
    return {"shape": list(a.shape), "dtype": "float32", "b64": base64.b64encode(a).decode()}


WIDE = {"u": {"data": [CANARY] + [0] * 599}, "v": {"data": [[0]] * 600}}  # u + v: 600 x 600
PAD = {"data": [CANARY] * 200}

# name, changes to the §1 example, settings, status, code, pointer (None: no particular place)
ERRORS = [
    ("bool in data", {"inputs/x/data": [[CANARY, True], [3, 4]]}, {}, 422, "bad_tensor",
     "/inputs/x/data/0/1"),
    ("null in data", {"inputs/x/data": [[CANARY, 2], [None, 4]]}, {}, 422, "bad_tensor",
     "/inputs/x/data/1/0"),
    ("string in data", {"inputs/w/data": [[CANARY], ["-inf"]]}, {}, 422, "bad_tensor",
     "/inputs/w/data/1/0"),
    ("ragged data", {"inputs/x/data": [[CANARY, 2], [3]]}, {}, 422, "bad_tensor",
     "/inputs/x/data/0"),
    ("flat data too short", {"inputs/x": {"shape": [2, 2], "data": [CANARY, 2, 3]}}, {}, 422,
     "bad_tensor", "/inputs/x/data"),
    ("base64 of the wrong length", {"inputs/b/b64": _b64([CANARY, 1])["b64"]}, {}, 422,
     "bad_tensor", "/inputs/b/b64"),
    ("base64 not base64", {"inputs/b/b64": "AAC*Pw=="}, {}, 422, "bad_tensor", "/inputs/b/b64"),
    ("matmul shapes do not align", {"inputs/w/data": [[CANARY], [1], [2]]}, {}, 422,
     "shape_mismatch", "/nodes/0/args"),
    ("add shapes do not broadcast", {"inputs/b": {"data": [[CANARY], [2], [3]]}}, {}, 422,
     "shape_mismatch", "/nodes/1/args"),
    ("seed of the wrong shape", {"grad/seed": {"data": [CANARY, 2]}}, {}, 422,
     "shape_mismatch", "/grad/seed"),
    ("seed required", {"grad/of": "a"}, {}, 422, "seed_required", "/grad"),
    ("unknown op", {"nodes/2/op": "swish"}, {}, 422, "unknown_op", "/nodes/2/op"),
    ("an engine-internal op", {"nodes/2/op": "scatter_add"}, {}, 422, "unknown_op",
     "/nodes/2/op"),
    ("index out of range", {"nodes/2/op": "getitem", "nodes/2/attrs": {"index": [0, 1]}}, {},
     422, "bad_attribute", "/nodes/2/attrs/index/1"),
    ("unknown id in args", {"nodes/1/args": ["h", "c"]}, {}, 422, "unknown_id",
     "/nodes/1/args/1"),
    ("unknown id in outputs", {"outputs": ["loss", "q"]}, {}, 422, "unknown_id", "/outputs/1"),
    ("unknown id in wrt", {"grad/wrt": ["w", "q"]}, {}, 422, "unknown_id", "/grad/wrt/1"),
    ("unknown grad.of", {"grad/of": "q"}, {}, 422, "unknown_id", "/grad/of"),
    ("node id of an input", {"nodes/0/id": "x"}, {}, 422, "duplicate_id", "/nodes/0/id"),
    ("node id twice", {"nodes/1/id": "h"}, {}, 422, "duplicate_id", "/nodes/1/id"),
    ("cycle", {"nodes/0/args": ["x", "a"]}, {}, 422, "cycle", "/nodes/0"),
    ("wrong arity", {"nodes/2/args": ["z", "z"]}, {}, 422, "wrong_arity", "/nodes/2/args"),
    ("axis out of range", {"nodes/3/attrs": {"axis": 2}}, {}, 422, "bad_attribute",
     "/nodes/3/attrs/axis"),
    ("unknown attribute", {"nodes/2/attrs": {"axis": 0}}, {}, 422, "bad_attribute",
     "/nodes/2/attrs/axis"),
    ("ill-typed attribute", {"nodes/3/attrs": {"keepdims": 1}}, {}, 422, "bad_attribute",
     "/nodes/3/attrs/keepdims"),
    ("extra member", {"extra": CANARY}, {}, 422, "validation_error", "/extra"),
    ("string for a bool", {"inputs/w/requires_grad": "true"}, {}, 422, "validation_error",
     "/inputs/w/requires_grad"),
    ("float in a shape", {"inputs/b/shape": [1.0]}, {}, 422, "validation_error",
     "/inputs/b/shape/0"),
    ("unknown dtype", {"dtype": "float16"}, {}, 422, "validation_error", "/dtype"),
    ("unknown encoding", {"encoding": "msgpack"}, {}, 422, "validation_error", "/encoding"),
    ("bad id", {"nodes/0/id": "0h"}, {}, 422, "validation_error", "/nodes/0/id"),
    ("data and b64", {"inputs/b/data": [CANARY]}, {}, 422, "validation_error", "/inputs/b"),
    ("no nodes, outputs name them", {"nodes": DROP}, {}, 422, "unknown_id", "/outputs/0"),
    ("expr that does not parse", {"expr": {"y": "exp(x"}}, {}, 422, "bad_expression",
     "/expr/y"),
    ("expr shapes do not align", {"expr": {"y": "exp(x @ b)"}}, {}, 422, "shape_mismatch",
     "/expr/y"),
    ("expr names an unknown id", {"expr": {"y": "exp(x) + q"}}, {}, 422, "unknown_id",
     "/expr/y"),
    ("expr too long", {"expr": {"y": "x+" * 5001}}, {}, 413, "expression_too_large", "/expr/y"),
    ("expr key off the id pattern", {"expr": {"0y": "exp(x)"}}, {}, 422, "validation_error",
     "/expr/0y"),
    ("number where the op takes none", {"nodes/0/args": ["x", 2]}, {}, 422,
     "validation_error", "/nodes/0/args/1"),
    ("too many elements in an input", {}, {"max_elements": 3}, 413, "tensor_too_large",
     "/inputs/x/data"),
    ("too many elements by shape", {"inputs/b/shape": [2, 3]}, {"max_elements": 5}, 413,
     "tensor_too_large", "/inputs/b/shape"),
    ("too many elements in a node", {"inputs/b": {"data": [[CANARY, 2, 3]]}},
     {"max_elements": 4}, 413, "tensor_too_large", "/nodes/1"),
    ("too many nodes", {}, {"max_nodes": 3}, 413, "graph_too_large", "/nodes"),
    ("too many FLOPs", {}, {"max_flops": 10}, 413, "graph_too_large", None),
    ("too many bytes at once",
     {"inputs": WIDE, "nodes": [{"id": "y", "op": "add", "args": ["u", "v"]}], "grad": DROP,
      "outputs": DROP}, {"max_total_bytes": 2**20}, 413, "graph_too_large", None),
    ("response too large", {"inputs/u": PAD, "outputs": ["u", "loss"]},
     {"max_response_bytes": 1024}, 413, "response_too_large", None),
    ("body too large", {"inputs/u": PAD}, {"max_body_bytes": 1024}, 413, "body_too_large",
     None),
    ("past the deadline", {}, {"deadline_s": 1e-9}, 504, "deadline_exceeded", None),
]


@pytest.mark.parametrize(("changes", "settings", "status", "code", "where"),
                         [r[1:] for r in ERRORS], ids=[r[0] for r in ERRORS])
def test_errors(example, changes, settings, status, code, where, openapi):
    example["inputs"]["unused"] = {"data": [[CANARY, -CANARY]]}  # must not come back
    for path, value in changes.items():
        change(example, path, value)
    body = problem(client(**settings).post("/v1/evaluate", json=example), status, code)
    conforms(openapi, body, "Problem")
    if where is not None:
        assert where in pointers(body), body
    assert CODES[code][0] == status


RAW = [
    # name, body bytes, content type, status, code
    ("bare NaN", b'{"inputs": {"x": {"data": NaN}}, "nodes": []}', "application/json", 400,
     "malformed_json"),
    ("bare Infinity", b'{"inputs": {"x": {"data": [Infinity]}}, "nodes": []}',
     "application/json", 400, "malformed_json"),
    ("truncated", b'{"inputs": {', "application/json", 400, "malformed_json"),
    ("empty body", b"", "application/json", 400, "malformed_json"),
    ("not an object", b"[1, 2]", "application/json", 400, "malformed_json"),
    ("a bare number", b"31415.92", "application/json", 400, "malformed_json"),
    ("not UTF-8", b'{"inputs": "\xff"}', "application/json", 400, "malformed_json"),
    ("text/plain", b'{"inputs": {}, "nodes": []}', "text/plain", 415, "unsupported_media_type"),
    ("form", b"inputs=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("no content type", b'{"inputs": {}, "nodes": []}', None, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), [r[1:] for r in RAW],
                         ids=[r[0] for r in RAW])
def test_raw_body_errors(app_client, data, content_type, status, code):
    problem(app_client.post("/v1/evaluate", data=data, content_type=content_type), status, code)


NONFINITE_HINT = 'the strings "NaN", "Infinity" and "-Infinity"'


@pytest.mark.parametrize(("name", "data", "status", "hinted"), [
    ("Python's json.dumps: bare NaN", b'{"inputs": {"x": {"data": [1.0, NaN]}}, "nodes": []}',
     400, True),
    ("bare -Infinity", b'{"inputs": {"x": {"data": -Infinity}}, "nodes": []}', 400, True),
    ("numpy's str: nan", b'{"inputs": {"x": {"data": [nan]}}, "nodes": []}', 400, True),
    ("JavaScript's JSON.stringify: null", b'{"inputs": {"x": {"data": [[1, null]]}}, '
     b'"nodes": []}', 422, True),
    ("a trailing comma", b'{"inputs": {"x": {"data": [1,]}}, "nodes": []}', 400, False),
    ("a boolean in data", b'{"inputs": {"x": {"data": [true]}}, "nodes": []}', 422, False),
])
def test_non_finite_mistakes_say_how_to_write_them(app_client, name, data, status, hinted):
    r = app_client.post("/v1/evaluate", data=data, content_type="application/json")
    body = problem(r, status, "malformed_json" if status == 400 else "bad_tensor")
    assert (NONFINITE_HINT in body["detail"]) == hinted, body["detail"]


@pytest.mark.parametrize(("op", "meant"), [("sigmod", "sigmoid"), ("Sigmoid", "sigmoid"),
                                           ("swish", None)])
def test_unknown_op_says_what_was_meant_and_where_the_ops_are(app_client, example, op, meant):
    example["nodes"][2]["op"] = op
    body = problem(app_client.post("/v1/evaluate", json=example), 422, "unknown_op")
    assert ("did you mean 'sigmoid'?" in body["detail"]) == bool(meant)
    assert body["detail"].endswith("GET /v1/ops lists every op")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/vnd.gradserve+json"])
def test_json_media_types_are_accepted(app_client, example, content_type):
    from service.codec import dumps
    ok(app_client.post("/v1/evaluate", data=dumps(example), content_type=content_type))


def test_response_too_large_is_avoided_by_base64(example):
    example["inputs"]["u"] = {"data": [0.5] * 200}
    example["outputs"] = ["u", "loss"]
    small = client(max_response_bytes=2048)
    problem(small.post("/v1/evaluate", json=example), 413, "response_too_large")
    example["encoding"] = "base64"
    got = ok(small.post("/v1/evaluate", json=example))
    assert decode_any(got["outputs"]["u"]).tolist() == [0.5] * 200


class Unreadable:
    """A request body of 10**9 bytes that fails the request if the service reads any of it."""

    size = 10**9

    def __init__(self):
        self.pos = 0

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = self.size if whence == 2 else offset

    def read(self, *a):
        raise AssertionError("the body was read")

    readline = read


def test_body_too_large_is_refused_from_content_length_before_reading():
    r = client(max_body_bytes=1024).post("/v1/evaluate", input_stream=Unreadable(),
                                          content_type="application/json")
    problem(r, 413, "body_too_large")


class Chunked:
    """A chunked body as the server hands it over: no Content-Length, read to its end."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, size=-1):
        end = len(self.data) if size is None or size < 0 else self.pos + size
        out, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return out


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413), (10**6, 413)])
def test_a_chunked_body_past_the_limit_is_refused_never_cut(example, extra, status):
    """v1 cut it at max_body_bytes and evaluated the prefix (200)."""
    body = orjson.dumps(example)
    pad = b" " * (2048 - len(body) + extra)  # JSON whitespace: the prefix is the whole example
    app = client(max_body_bytes=2048)
    r = app.post("/v1/evaluate", content_type="application/json", environ_overrides={
        "wsgi.input": Chunked(body + pad), "CONTENT_LENGTH": "", "wsgi.input_terminated": True,
        "HTTP_TRANSFER_ENCODING": "chunked"})
    if status == 200:
        ok(r)
    else:
        problem(r, 413, "body_too_large")


def test_a_body_that_cannot_be_read_is_400_not_500(example):
    class Malformed:
        def read(self, size=-1):
            raise ValueError("Invalid chunk size: b'zz'")  # as gunicorn's parser raises

    r = client().post("/v1/evaluate", content_type="application/json", environ_overrides={
        "wsgi.input": Malformed(), "CONTENT_LENGTH": "", "wsgi.input_terminated": True})
    assert "zz" in problem(r, 400, "bad_request")["detail"]


def test_a_view_missing_from_routes_gets_every_check():
    """The guard fails closed: a route added without a ROUTES entry is keyed, size-limited
    and JSON-only, not open."""
    app = create_app(Settings(api_keys=("k",), max_body_bytes=1024))
    app.add_url_rule("/v1/unlisted", view_func=lambda: {"served": True},
                     endpoint="unlisted", methods=["GET", "POST"])
    c, key = app.test_client(), {"Authorization": "Bearer k"}
    problem(c.get("/v1/unlisted"), 401, "unauthorized")
    problem(c.post("/v1/unlisted", json={}), 401, "unauthorized")
    problem(c.post("/v1/unlisted", data=b"{}", headers=key, content_type="text/plain"), 415,
            "unsupported_media_type")
    problem(c.post("/v1/unlisted", input_stream=Unreadable(), headers=key,
                   content_type="application/json"), 413, "body_too_large")
    assert c.get("/v1/unlisted", headers=key).json == {"served": True}
    assert c.post("/v1/unlisted", json={}, headers=key).json == {"served": True}


@pytest.mark.parametrize("path", ["/v1/evaluate", "/v1/shapes"])
@pytest.mark.parametrize("member", [("outputs",), ("jacobian", "of"), ("hvp", "wrt")])
def test_lists_are_counted_before_validation_on_every_graph_route(example, path, member):
    body, ids = example, ["loss"] * 11
    for key in member[:-1]:
        body = body.setdefault(key, {})
    body[member[-1]] = ids
    r = client(max_items=10).post(path, json=example)
    assert problem(r, 413, "graph_too_large")["errors"][0]["pointer"] == "/" + "/".join(member)


def test_the_deadline_covers_validation(example):
    r = client(deadline_s=1e-9).post("/v1/evaluate", json=example)
    assert "validating" in problem(r, 504, "deadline_exceeded")["detail"]
    r = client(deadline_s=1e-9, max_elements=2).post("/v1/evaluate", json=example)
    problem(r, 413, "tensor_too_large")  # a refusal by size comes first


def test_validation_errors_stop_at_max_errors_and_say_how_many_there_were():
    body = {"inputs": {}, "nodes": [{}] * 5000}
    r = client(max_errors=7).post("/v1/evaluate", json=body)
    p = problem(r, 422, "validation_error")
    assert len(p["errors"]) == 7 and p["errors"][0]["pointer"].startswith("/nodes/0")
    assert "(and 14,999 more)" in p["detail"]  # id, op and args missing in each


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("get", "/v1/evaluate", {"POST"}), ("put", "/v1/evaluate", {"POST"}),
    ("post", "/v1/ops", {"GET"}), ("delete", "/healthz", {"GET"}),
])
def test_wrong_method_is_405_with_allow(app_client, method, path, allow):
    r = getattr(app_client, method)(path)
    problem(r, 405, "method_not_allowed")
    assert allow <= {m.strip() for m in r.headers["Allow"].split(",")}


def test_unknown_path_is_404(app_client):
    problem(app_client.get("/v2/evaluate"), 404, "not_found")


# Codes no request can reach through the app, and why: the rest must each have a row.
UNREACHABLE = {
    "internal": "a bug, never an answer to client input",
    "overloaded": "answered by the server in front of the app when every worker is busy",
    "dtype_mismatch": "the schema refuses an unknown dtype first (validation_error)",
    # from the worker (service/worker.py) or its parser's errors: tests/e2e/test_worker.py
    "bad_request": "a request gunicorn's parser refuses (malformed head or chunked body)",
    "request_timeout": "a request that takes longer than request_timeout_s to arrive",
    "uri_too_long": "a request line past gunicorn's limit_request_line",
    "header_too_large": "header fields past gunicorn's limits",
}


def test_every_code_a_request_can_cause_has_a_row():
    covered = {r[4] for r in ERRORS} | {r[4] for r in RAW} | {
        "method_not_allowed", "not_found", "unauthorized", "not_ready",
        "unknown_model"}  # tests/service/test_models.py
    assert covered == set(CODES) - set(UNREACHABLE)


# ---- API keys ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed():
    return client(api_keys="k1, k2")


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer k1x", "Bearer ",
                                           "Basic k1", "k1", "Bearer k1, k2"])
def test_without_a_valid_key_401(keyed, example, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = keyed.post("/v1/evaluate", json=example, headers=headers)
    problem(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    problem(keyed.get("/v1", headers=headers), 401, "unauthorized")
    problem(keyed.get("/v1/ops", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("key", ["k1", "k2"])
def test_with_a_valid_key_200(keyed, example, key):
    headers = {"Authorization": f"Bearer {key}"}
    assert ok(keyed.post("/v1/evaluate", json=example, headers=headers))["outputs"]
    assert ok(keyed.get("/v1", headers=headers))["name"] == "gradserve"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_probes_and_the_document_stay_open(keyed, path):
    ok(keyed.get(path))


def test_auth_comes_before_the_body_limit_and_media_type():
    """An unauthenticated client learns nothing about the server's limits."""
    r = client(api_keys="k", max_body_bytes=1024).post(
        "/v1/evaluate", input_stream=Unreadable(), content_type="text/plain")
    problem(r, 401, "unauthorized")


# ---- GET /v1, /v1/ops, /healthz, /readyz, /openapi.json: PROTOCOL.md §5 ------------------

def test_info_tells_what_the_server_accepts(openapi):
    settings = dict(max_nodes=123, max_elements=4567, max_body_bytes=8910,
                    max_flops=1.5e9, max_total_bytes=2**21, deadline_s=2.5)
    body = ok(client(**settings).get("/v1"))
    conforms(openapi, body, "Info")
    assert body["name"] == "gradserve" and body["version"]
    assert body["dtypes"] == ["float32", "float64"]
    assert set(body["encodings"]) == {"nested", "flat", "base64"}
    for key, value in settings.items():
        assert body["limits"][key] == value


# PROTOCOL.md §2, written out here: op -> (args, attributes, may an arg be a number)
V1_OPS = {
    "add": (2, set(), True), "sub": (2, set(), True), "mul": (2, set(), True),
    "matmul": (2, set(), False), "pow": (1, {"exponent"}, False), "neg": (1, set(), False),
    "abs": (1, set(), False), "transpose": (1, {"axes"}, False),
    "reshape": (1, {"shape"}, False), "sum": (1, {"axis", "keepdims"}, False),
    "mean": (1, {"axis", "keepdims"}, False), "exp": (1, set(), False),
    "log": (1, set(), False), "sqrt": (1, set(), False), "sin": (1, set(), False),
    "cos": (1, set(), False), "tan": (1, set(), False), "relu": (1, set(), False),
    "sigmoid": (1, set(), False), "tanh": (1, set(), False), "softmax": (1, {"axis"}, False),
    "mse_loss": (2, set(), False), "mae_loss": (2, set(), False),
}


def test_ops_lists_the_registry(app_client, openapi):
    body = ok(app_client.get("/v1/ops"))
    conforms(openapi, body, "OpsList")
    listed = {o["name"]: o for o in body["ops"]}
    assert len(listed) == len(body["ops"]) and set(listed) == set(OPS)
    for name, op in OPS.items():
        o = listed[name]
        assert o["arity"] == op.arity and o["numbers"] == list(op.numbers)
        assert set(o["attrs"]) == {a.name for a in op.attrs}
        assert o["forward"] == op.doc and o["gradient"] == op.grad_doc
        assert o["forward"].strip() and o["gradient"].strip()
        assert set(o["dtypes"]) <= {"float32", "float64"}


@pytest.mark.parametrize("name", sorted(V1_OPS))
def test_ops_has_the_protocol_v1_set(app_client, name):
    listed = {o["name"]: o for o in ok(app_client.get("/v1/ops"))["ops"]}
    arity, attrs, numbers = V1_OPS[name]
    o = listed[name]
    assert o["arity"] == arity and set(o["attrs"]) == attrs and bool(o["numbers"]) == numbers
    for attr, schema in o["attrs"].items():
        OAS31Validator.check_schema(schema)  # each attribute's JSON Schema is a schema
        assert schema.get("description"), attr


def test_healthz(app_client, openapi):
    body = ok(app_client.get("/healthz"))
    assert body == {"status": "ok"}
    conforms(openapi, body, "Status")


def test_readyz_is_503_while_draining(openapi):
    c = client()
    assert ok(c.get("/readyz"))["status"]
    c.application.extensions["gradserve"].draining = True
    r = c.get("/readyz")
    conforms(openapi, problem(r, 503, "not_ready"), "Problem")
    assert int(r.headers["Retry-After"]) >= 0
    assert ok(c.get("/healthz")) == {"status": "ok"}  # alive, though not ready


ENDPOINTS = {("post", "/v1/evaluate"), ("get", "/v1"), ("get", "/v1/ops"),
             ("get", "/openapi.json"), ("get", "/healthz"), ("get", "/readyz")}
# The error statuses each endpoint answers in these tests, which the document must describe.
ANSWERS = {
    ("post", "/v1/evaluate"): {r[3] for r in ERRORS} | {r[3] for r in RAW} | {401},
    ("get", "/v1"): {401}, ("get", "/v1/ops"): {401}, ("get", "/readyz"): {503},
}


def test_openapi_is_valid_and_describes_every_endpoint_and_error(openapi):
    validate_spec(openapi)
    assert openapi["openapi"].startswith("3.1")
    described = {(m, p) for p, methods in openapi["paths"].items() for m in methods}
    assert described >= ENDPOINTS
    for method, path in ENDPOINTS:
        responses = openapi["paths"][path][method]["responses"]
        assert "200" in responses
        assert ANSWERS.get((method, path), set()) <= {int(s) for s in responses if s != "200"}
        for status, response in responses.items():
            if status != "200":
                schema = response["content"][PROBLEM]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (path, status)
    request = openapi["paths"]["/v1/evaluate"]["post"]["requestBody"]
    assert request["content"]["application/json"]["schema"]["$ref"].endswith("EvaluateRequest")


def test_openapi_describes_its_own_response(app_client, openapi):
    ok200 = openapi["paths"]["/openapi.json"]["get"]["responses"]["200"]
    schema = ok200["content"]["application/json"]["schema"]
    OAS31Validator(schema).validate(openapi)


def keywords(schema, found=None) -> set[str]:
    """Every JSON Schema keyword used anywhere below `schema` (property names aside)."""
    found = set() if found is None else found
    if isinstance(schema, list):
        for s in schema:
            keywords(s, found)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "properties":
                for s in value.values():
                    keywords(s, found)
            elif key not in ("enum", "const", "required"):
                keywords(value, found)
    return found


def test_openapi_avoids_what_code_generators_cannot_follow(openapi):
    """tests/e2e/test_generated_clients.py runs the generators; this says why, quickly."""
    schemas = openapi["components"]["schemas"]
    used = keywords(schemas)
    assert not used & {"oneOf", "patternProperties", "default"}, used
    assert "NestedData" not in schemas and "NestedData" not in json.dumps(openapi)
    inputs = schemas["EvaluateRequest"]["properties"]["inputs"]
    assert inputs["additionalProperties"] == {"$ref": "#/components/schemas/InputTensor"}
    assert inputs["propertyNames"]["pattern"].startswith("^")
    dtype = schemas["EvaluateRequest"]["properties"]["dtype"]
    assert 'default: "float32"' in dtype["description"]


ABSENT = object()
MEMBERS = {"data": [ABSENT, None, [1.0]], "shape": [ABSENT, None, [1]],
           "dtype": [ABSENT, None, "float32"], "b64": [ABSENT, None, "AACAPw=="],
           "encoding": [ABSENT, None, "nested", "flat"]}


def test_the_documents_tensor_forms_are_exactly_the_servers(openapi):
    """Every mix of members (absent, null, given): the document's constraints (written for
    generators and schemathesis alike) accept a request tensor exactly when the server does."""
    schema = OAS31Validator({"$ref": "#/components/schemas/TensorIn",
                             "components": openapi["components"]})
    for values in itertools.product(*MEMBERS.values()):
        body = {k: v for k, v in zip(MEMBERS, values, strict=True) if v is not ABSENT}
        try:
            TensorIn.model_validate(body)
            served = True
        except pydantic.ValidationError:
            served = False
        assert schema.is_valid(body) == served, body


def test_the_request_schema_accepts_the_example(openapi, example):
    conforms(openapi, example, "EvaluateRequest")
    bad = copy.deepcopy(example)
    bad["extra"] = 1
    with pytest.raises(Exception, match="extra"):
        conforms(openapi, bad, "EvaluateRequest")


def test_the_service_loads_neither_the_sdk_nor_its_http_client():
    """Layers point one way: service -> autograd, client -> autograd, never service -> client
    (a worker would load `requests` for nothing)."""
    program = ("import sys, service.wsgi; "
               "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"service", "autograd", "flask", "numpy"} <= loaded
    assert not loaded & {"client", "requests", "urllib3"}
