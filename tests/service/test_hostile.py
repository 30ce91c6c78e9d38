"""Hostile inputs, one table: each gets its documented 4xx (PROTOCOL.md §4, service/errors.py
CODES), never a 500, and the PROTOCOL.md §1 example sent right after it still gets the right
numbers. bench/soak.py replays the same table against a real gunicorn.

A case's body is bytes as sent, a JSON value, or a function of the §1 example (a fresh copy)
returning either, so that each case reads as "the example, with this one thing wrong".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from service.app import create_app
from service.config import Settings
from service.errors import CODES

JSON = {"Content-Type": "application/json"}
KEY = "k"  # the one API key of the keyed app
GiB = 2**30


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict
    body: bytes | dict | list | Callable | None
    status: int
    code: str
    environ: dict = field(default_factory=dict)  # WSGI overrides: what cannot be sent cheaply
    keyed: bool = False  # against an app with api_keys=(KEY,)

    def payload(self, example: dict) -> bytes | None:
        body = self.body(copy.deepcopy(example)) if callable(self.body) else self.body
        if body is None or isinstance(body, bytes):
            return body
        return orjson.dumps(body)


def post(name, body, status, code, headers=JSON, **kw) -> Case:
    return Case(name, "POST", "/v1/evaluate", headers, body, status, code, **kw)


# ---- edits of the §1 example ----------------------------------------------------------------

def _walk(doc, pointer: str):
    *parents, last = pointer.strip("/").split("/")
    for p in parents:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, (int(last) if isinstance(doc, list) else last)


def put(pointer: str, value) -> Callable:
    """The example with the member at `pointer` set to `value`."""
    def edit(ex):
        parent, key = _walk(ex, pointer)
        parent[key] = value
        return ex
    return edit


def drop(pointer: str) -> Callable:
    def edit(ex):
        parent, key = _walk(ex, pointer)
        del parent[key]
        return ex
    return edit


def node(id, op, args, **attrs) -> dict:
    return {"id": id, "op": op, "args": list(args), **({"attrs": attrs} if attrs else {})}


def graph(inputs: dict, nodes: list, **rest) -> dict:
    return {"inputs": inputs, "nodes": nodes, **rest}


def data(value, **kw) -> dict:
    return {"data": value, **kw}


def op_named(name) -> Callable:
    return put("/nodes/2/op", name)


def deep(n: int, leaf: bytes = b"1") -> bytes:
    return b"[" * n + leaf + b"]" * n


def nested(n: int):
    v = 1.0
    for _ in range(n):
        v = [v]
    return v


X = data([[1, 2], [3, 4]])
ZEROS = 4096  # a (4096, 4096) tensor made from two 4096-vectors by broadcasting


def flops_chain(ex):
    """Four 4096³ matmuls: each tensor is small enough, the FLOPs (5.5e11) are not."""
    col = {"shape": [ZEROS, 1], "data": [0] * ZEROS}
    row = {"shape": [1, ZEROS], "data": [0] * ZEROS}
    nodes = [node("m0", "add", ["c", "r"])]
    nodes += [node(f"m{i}", "matmul", [f"m{i - 1}", "m0"]) for i in range(1, 5)]
    return graph({"c": col, "r": row}, nodes, outputs=["m4"])


def cube_matmul(ex):
    """A 20000³ matmul: its operand, the outer product of two 20000-vectors, is refused."""
    v = {"shape": [20000, 1], "data": [0] * 20000}
    return graph({"v": v}, [node("t", "reshape", ["v"], shape=[1, 20000]),
                            node("o", "matmul", ["v", "t"]), node("m", "matmul", ["o", "o"])])


def broadcast_1e5(ex):
    v = {"shape": [100000], "data": [0] * 100000}
    return graph({"v": v}, [node("c", "reshape", ["v"], shape=[-1, 1]),
                            node("o", "add", ["c", "v"])])


def huge_response(ex):
    """A 2^25-element output, within every limit but the response's in nested JSON."""
    c = {"shape": [2**12, 1], "data": [0] * 2**12}
    r = {"shape": [1, 2**13], "data": [0] * 2**13}
    return graph({"c": c, "r": r}, [node("o", "add", ["c", "r"])])


def many_nodes(ex):
    """200,001 nodes, one over max_nodes: the same node object repeated, dumped once."""
    return graph({"x": X}, [node("n", "neg", ["x"])] * 200_001)


CASES = [
    # -- the body is not a JSON object ---------------------------------------------------
    post("truncated JSON", b'{"inputs": {', 400, "malformed_json"),
    post("trailing comma", b'{"inputs": {}, "nodes": [],}', 400, "malformed_json"),
    post("single quotes", b"{'inputs': {}}", 400, "malformed_json"),
    post("empty body", b"", 400, "malformed_json"),
    post("invalid UTF-8", b'{"inputs": {"\xff": 1}}', 400, "malformed_json"),
    post("lone surrogate", b'{"inputs": {"\\ud800": {"data": 1}}, "nodes": []}', 400,
         "malformed_json"),
    post("arrays 100,000 deep", deep(100_000), 400, "malformed_json"),
    post("objects 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400,
         "malformed_json"),
    post("data 100,000 deep", lambda ex: orjson.dumps(ex).replace(
        b'[[1,2],[3,4]]', deep(100_000)), 400, "malformed_json"),
    post("bare NaN", lambda ex: orjson.dumps(ex).replace(b"[[1,2]", b"[[NaN,2]"), 400,
         "malformed_json"),
    post("bare Infinity", lambda ex: orjson.dumps(ex).replace(b"[[1,2]", b"[[Infinity,2]"),
         400, "malformed_json"),
    post("bare -Infinity", lambda ex: orjson.dumps(ex).replace(b"[[1,2]", b"[[-Infinity,2]"),
         400, "malformed_json"),
    post("1e400 overflows a double", lambda ex: orjson.dumps(ex).replace(b"[[1,2]", b"[[1e400,2]"),
         400, "malformed_json"),
    post("a JSON array", [1, 2, 3], 400, "malformed_json"),
    post("a JSON string", b'"inputs"', 400, "malformed_json"),
    post("a JSON number", b"42", 400, "malformed_json"),
    post("JSON null", b"null", 400, "malformed_json"),
    # -- HTTP: media type, method, path, size ---------------------------------------------
    post("text/plain", lambda ex: ex, 415, "unsupported_media_type",
         headers={"Content-Type": "text/plain"}),
    post("no Content-Type", lambda ex: ex, 415, "unsupported_media_type", headers={}),
    post("form-encoded", b"inputs=1", 415, "unsupported_media_type",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Case("GET on evaluate", "GET", "/v1/evaluate", {}, None, 405, "method_not_allowed"),
    Case("PUT on evaluate", "PUT", "/v1/evaluate", JSON, lambda ex: ex, 405,
         "method_not_allowed"),
    Case("DELETE on ops", "DELETE", "/v1/ops", {}, None, 405, "method_not_allowed"),
    Case("OPTIONS on evaluate", "OPTIONS", "/v1/evaluate", {}, None, 405, "method_not_allowed"),
    Case("POST on healthz", "POST", "/healthz", JSON, b"{}", 405, "method_not_allowed"),
    Case("unknown path", "POST", "/v1/evaluat", JSON, lambda ex: ex, 404, "not_found"),
    Case("path traversal", "GET", "/v1/../../etc/passwd", {}, None, 404, "not_found"),
    Case("encoded traversal", "GET", "/v1/%2e%2e/%2e%2e/etc/passwd", {}, None, 404,
         "not_found"),
    post("10 GB Content-Length, body not sent", b"", 413, "body_too_large",
         environ={"CONTENT_LENGTH": str(10 * GiB)}),
    # -- ops --------------------------------------------------------------------------------
    post("op __import__", op_named("__import__"), 422, "unknown_op"),
    post("op eval", op_named("eval"), 422, "unknown_op"),
    post("op ../../etc/passwd", op_named("../../etc/passwd"), 422, "unknown_op"),
    post("op os.system", op_named("os.system"), 422, "unknown_op"),
    post("op in upper case", op_named("SIGMOID"), 422, "unknown_op"),
    post("op empty", op_named(""), 422, "unknown_op"),
    post("op a number", op_named(7), 422, "validation_error"),
    post("op null", op_named(None), 422, "validation_error"),
    # -- ids --------------------------------------------------------------------------------
    post("dangling arg", put("/nodes/1/args/1", "nope"), 422, "unknown_id"),
    post("dangling output", put("/outputs/1", "nope"), 422, "unknown_id"),
    post("dangling grad.of", put("/grad/of", "nope"), 422, "unknown_id"),
    post("dangling grad.wrt", put("/grad/wrt/0", "nope"), 422, "unknown_id"),
    post("duplicate node id", put("/nodes/2/id", "h"), 422, "duplicate_id"),
    post("node id of an input", put("/nodes/0/id", "x"), 422, "duplicate_id"),
    post("cycle of two", put("/nodes/0/args/0", "z"), 422, "cycle"),
    post("self-loop", put("/nodes/2/args/0", "a"), 422, "cycle"),
    post("id a/b", put("/nodes/0/id", "a/b"), 422, "validation_error"),
    post("id ../x", put("/nodes/0/id", "../x"), 422, "validation_error"),
    post("id ~", put("/nodes/0/id", "~"), 422, "validation_error"),
    post("input named ~1/..", lambda ex: {**ex, "inputs": {**ex["inputs"], "~1/..": X}}, 422,
         "validation_error"),
    post("id of 129 characters", put("/nodes/0/id", "h" * 129), 422, "validation_error"),
    post("id of a megabyte", put("/nodes/0/id", "h" * 2**20), 422, "validation_error"),
    post("id not ASCII", put("/nodes/0/id", "é"), 422, "validation_error"),
    post("id a number", put("/nodes/0/id", 1), 422, "validation_error"),
    # -- arity, literals, attributes --------------------------------------------------------
    post("matmul with one arg", put("/nodes/0/args", ["x"]), 422, "wrong_arity"),
    post("add with three args", put("/nodes/1/args", ["h", "b", "b"]), 422, "wrong_arity"),
    post("sigmoid with none", put("/nodes/2/args", []), 422, "wrong_arity"),
    post("args not a list", put("/nodes/2/args", "z"), 422, "validation_error"),
    post("number arg to matmul", put("/nodes/0/args/1", 2), 422, "validation_error"),
    post("number arg to sigmoid", put("/nodes/2/args/0", 2), 422, "validation_error"),
    post("only numbers to add", put("/nodes/1/args", [1, 2]), 422, "validation_error"),
    post("bool arg to add", put("/nodes/1/args/1", True), 422, "validation_error"),
    post("object arg", put("/nodes/1/args/1", {"id": "b"}), 422, "validation_error"),
    post("unknown attribute", put("/nodes/3/attrs", {"axis": 0, "foo": 1}), 422,
         "bad_attribute"),
    post("attrs not an object", put("/nodes/3/attrs", [0]), 422, "validation_error"),
    post("bool for an int axis", put("/nodes/3/attrs", {"axis": True}), 422, "bad_attribute"),
    post("int for a bool", put("/nodes/3/attrs", {"keepdims": 1}), 422, "bad_attribute"),
    post("float for an int", put("/nodes/3/attrs", {"axis": 1.0}), 422, "bad_attribute"),
    post("string for a number", put("/nodes/2", node("a", "pow", ["z"], exponent="2")), 422,
         "bad_attribute"),
    post("NaN exponent", put("/nodes/2", node("a", "pow", ["z"], exponent="NaN")), 422,
         "bad_attribute"),
    post("pow without exponent", put("/nodes/2", node("a", "pow", ["z"])), 422,
         "bad_attribute"),
    post("axis out of range", put("/nodes/3/attrs", {"axis": 2}), 422, "bad_attribute"),
    post("negative axis out of range", put("/nodes/3/attrs", {"axis": -3}), 422,
         "bad_attribute"),
    post("axis 2^64 - 1", put("/nodes/3/attrs", {"axis": 2**64 - 1}), 422, "bad_attribute"),
    post("repeated axes", put("/nodes/3/attrs", {"axis": [0, -2]}), 422, "bad_attribute"),
    post("transpose axes repeated", put("/nodes/2", node("a", "transpose", ["z"], axes=[0, 0])),
         422, "bad_attribute"),
    post("softmax axis out of range", put("/nodes/2", node("a", "softmax", ["z"], axis=5)),
         422, "bad_attribute"),
    post("reshape with two -1", put("/nodes/2", node("a", "reshape", ["z"], shape=[-1, -1])),
         422, "bad_attribute"),
    post("reshape to -2", put("/nodes/2", node("a", "reshape", ["z"], shape=[-2, -1])), 422,
         "bad_attribute"),
    post("reshape to 2^62 x 0", put("/nodes/2", node("a", "reshape", ["z"], shape=[2**62, 0])),
         422, "shape_mismatch"),
    # -- shapes -----------------------------------------------------------------------------
    post("matmul does not align", put("/nodes/0/args", ["w", "x"]), 422, "shape_mismatch"),
    post("matmul of a vector", put("/inputs/x", data([1, 2])), 422, "shape_mismatch"),
    post("add does not broadcast", put("/inputs/b", data([[1], [2], [3]])), 422, "shape_mismatch"),
    post("losses of two shapes", put("/nodes/3", node("loss", "mse_loss", ["a", "x"])), 422,
         "shape_mismatch"),
    post("seed of the wrong shape", put("/grad", {"of": "a", "seed": data([1, 1])}), 422,
         "shape_mismatch"),
    post("non-scalar of without seed", put("/grad", {"of": "a"}), 422, "seed_required"),
    # -- tensors ----------------------------------------------------------------------------
    post("ragged", put("/inputs/x/data", [[1, 2], [3]]), 422, "bad_tensor"),
    post("ragged deeper", put("/inputs/x/data", [[1, 2], [3, [4]]]), 422, "bad_tensor"),
    post("boolean in data", put("/inputs/x/data", [[1, True], [3, 4]]), 422, "bad_tensor"),
    post("string in data", put("/inputs/x/data", [[1, "two"], [3, 4]]), 422, "bad_tensor"),
    post('"1.5" in data', put("/inputs/x/data", [[1, "1.5"], [3, 4]]), 422, "bad_tensor"),
    post('"nan" in data', put("/inputs/x/data", [[1, "nan"], [3, 4]]), 422, "bad_tensor"),
    post("null in data", put("/inputs/x/data", [[1, None], [3, 4]]), 422, "bad_tensor"),
    post("object in data", put("/inputs/x/data", [[1, {"v": 2}], [3, 4]]), 422, "bad_tensor"),
    post("data an object", put("/inputs/x/data", {"v": 2}), 422, "bad_tensor"),
    post("data a bare boolean", put("/inputs/x/data", False), 422, "bad_tensor"),
    post("data 65 deep", put("/inputs/x/data", nested(65)), 422, "bad_tensor"),
    post("data 1,000 deep", lambda ex: orjson.dumps(ex).replace(b'[[1,2],[3,4]]', deep(1000)),
         422, "bad_tensor"),
    post("flat length mismatch", put("/inputs/x", {"shape": [2, 2], "data": [1, 2, 3]}), 422,
         "bad_tensor"),
    post("nested data, other shape", put("/inputs/x", {"shape": [2, 2], "data": [[1, 2, 3]]}),
         422, "bad_tensor"),
    post("base64 too short", put("/inputs/b/b64", "AACA"), 422, "bad_tensor"),
    post("base64 invalid", put("/inputs/b/b64", "AA!?Pw=="), 422, "bad_tensor"),
    post("base64 with a newline", put("/inputs/b/b64", "AAC\nPw=="), 422, "bad_tensor"),
    post("base64, float64 size", put("/inputs/b/dtype", "float64"), 422, "bad_tensor"),
    post("base64 without dtype", drop("/inputs/b/dtype"), 422, "validation_error"),
    post("data and b64", put("/inputs/b/data", [1]), 422, "validation_error"),
    post("unknown tensor dtype", put("/inputs/b/dtype", "float16"), 422, "validation_error"),
    post("unknown dtype", put("/dtype", "int64"), 422, "validation_error"),
    post("unknown encoding", put("/encoding", "pickle"), 422, "validation_error"),
    post("unknown tensor encoding", put("/inputs/x/encoding", "zip"), 422, "validation_error"),
    post("requires_grad a string", put("/inputs/w/requires_grad", "yes"), 422,
         "validation_error"),
    post("anomaly 1", put("/anomaly", 1), 422, "validation_error"),
    post("negative dim", put("/inputs/x", {"shape": [-1, 2], "data": [1, 2]}), 422,
         "validation_error"),
    post("rank 65", put("/inputs/x", {"shape": [1] * 65, "data": [1]}), 422,
         "validation_error"),
    post("dim a float", put("/inputs/x", {"shape": [2.0, 2], "data": [1, 2, 3, 4]}), 422,
         "validation_error"),
    # -- extra members at every level -------------------------------------------------------
    post("extra top-level member", put("/eval", "1"), 422, "validation_error"),
    post("extra input member", put("/inputs/x/path", "/etc/passwd"), 422, "validation_error"),
    post("extra node member", put("/nodes/0/code", "import os"), 422, "validation_error"),
    post("extra grad member", put("/grad/extra", 1), 422, "validation_error"),
    post("extra seed member", put("/grad", {"of": "loss", "seed": data(1.0, url="x")}), 422,
         "validation_error"),
    post("inputs a list", put("/inputs", [X]), 422, "validation_error"),
    post("nodes missing, outputs name them", drop("/nodes"), 422, "unknown_id"),
    # -- sizes, refused from shapes ---------------------------------------------------------
    post("shape with 2^32 dims", put("/inputs/x", {"shape": [2**32, 2**32], "data": [1]}), 413,
         "tensor_too_large"),
    post("base64 of 2^32 elements", put("/inputs/b/shape", [2**32]), 413, "tensor_too_large"),
    post("empty with a 2^62 dim", put("/inputs/x", {"shape": [0, 2**62, 4], "data": []}), 413,
         "tensor_too_large"),
    post("reshape empty to 2^62 x 4 x 0", lambda ex: graph(
        {"e": data([])}, [node("r", "reshape", ["e"], shape=[2**62, 4, 0])]), 413,
        "tensor_too_large"),
    post("1e5 x 1e5 broadcast", broadcast_1e5, 413, "tensor_too_large"),
    post("20000^3 matmul", cube_matmul, 413, "tensor_too_large"),
    post("four 4096^3 matmuls", flops_chain, 413, "graph_too_large"),
    post("200,001 nodes", many_nodes, 413, "graph_too_large"),
    post("a 2^25-element nested response", huge_response, 413, "response_too_large"),
    # -- expressions (PROTOCOL.md §12): refused in milliseconds at /expr/KEY ----------------
    *(post(f"expr: {name}", put("/expr", {"y": text}), status, code)
      for name, text, status, code in [
        ("attribute access", "x.__class__.__bases__", 422, "bad_expression"),
        ("lambda", "(lambda: x)()", 422, "bad_expression"),
        ("comprehension", "[exp(a) for a in x]", 422, "bad_expression"),
        ("a call of a builtin", "__import__('os')", 422, "unknown_op"),
        ("a call of a method", "__import__('os').system('true')", 422, "bad_expression"),
        ("a call of a call", "exp(x)(x)", 422, "bad_expression"),
        ("9**9**9 tower", "x ** 9**9**9**9", 422, "bad_expression"),
        ("100,000 characters", "x+" * 50_000, 413, "expression_too_large"),
        ("10,000 nested parentheses", "(" * 10_000 + "x" + ")" * 10_000, 413,
         "expression_too_large"),
        ("9,999 unary minus", "-" * 9_999 + "x", 422, "bad_expression"),
        ("4,000 terms", "+".join(["x"] * 4_000), 422, "bad_expression"),
        ("a 5,000-digit literal", "x * " + "9" * 5_000, 422, "bad_expression"),
        ("a null byte", "x\0", 422, "bad_expression"),
    ]),
    post("expr: a key that is an input", put("/expr", {"x": "exp(w)"}), 422, "bad_expression"),
    post("expr: 200,001 keys", lambda ex: {"inputs": {"x": X}, "expr": {
        f"k{i}": "exp(x)" for i in range(200_001)}}, 413, "graph_too_large"),
    # -- shapes the planner must refuse itself (issue 15, item 5) -----------------------------
    post("reshape to rank 65",
         put("/nodes/3", node("loss", "reshape", ["a"], shape=[2] + [1] * 64)),
         422, "shape_mismatch"),
    post("broadcast_to rank 33", put("/nodes/3", node("loss", "broadcast_to", ["a"],
                                                      shape=[1] * 31 + [2, 1])),
         422, "shape_mismatch"),
    # -- counts and depths no one bounded in v1 (issue 15, items 4, 7, 8) ---------------------
    post("args nested 300 deep", lambda ex: orjson.dumps(ex).replace(
        b'"args":["h","b"]', b'"args":["h",' + deep(300) + b"]"), 422, "validation_error"),
    post("attrs nested 300 deep", lambda ex: orjson.dumps(ex).replace(
        b'"args":["a"]}', b'"args":["a"],"attrs":{"axis":' + deep(300) + b"}}"), 422,
        "validation_error"),
    post("attrs nested 33 deep", put("/nodes/3/attrs", {"axis": nested(33)}), 422,
         "validation_error"),
    post("a node with 100,000 args", put("/nodes/1/args", ["h"] * 100_000), 422,
         "validation_error"),
    post("100,001 inputs", lambda ex: {**ex, "inputs": {f"i{k}": X for k in range(100_001)}},
         413, "graph_too_large"),
    post("100,001 outputs", put("/outputs", ["loss"] * 100_001), 413, "graph_too_large"),
    post("100,001 wrt ids", put("/grad/wrt", ["w"] * 100_001), 413, "graph_too_large"),
    post("200,000 empty nodes", lambda ex: b'{"inputs": {}, "nodes": [' + b",".join(
        [b"{}"] * 200_000) + b"]}", 422, "validation_error"),
    # -- no redirects built from the Host header ---------------------------------------------
    post("//v1//evaluate, foreign Host", lambda ex: ex, 404, "not_found",
         environ={"PATH_INFO": "//v1//evaluate", "HTTP_HOST": "evil.example"}),
    Case("/v1/ops/ with a slash", "GET", "/v1/ops/", {}, None, 404, "not_found",
         environ={"HTTP_HOST": "evil.example"}),
    # -- API keys (an app with one key) -----------------------------------------------------
    post("no Authorization", lambda ex: ex, 401, "unauthorized", keyed=True),
    post("wrong key", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": "Bearer nope"}),
    post("key with a suffix", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": f"Bearer {KEY}{KEY}"}),
    post("Basic scheme", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": f"Basic {KEY}"}),
    post("key without a scheme", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": KEY}),
    post("empty bearer", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": "Bearer "}),
    post("bearer alone", lambda ex: ex, 401, "unauthorized", keyed=True,
         headers={**JSON, "Authorization": "Bearer"}),
    Case("keyed GET /v1 without key", "GET", "/v1", {}, None, 401, "unauthorized", keyed=True),
]

# What the §1 example must give (PROTOCOL.md §1, computed there with PyTorch).
EXPECTED = {("outputs", "loss"): 0.7743165, ("gradients", "b"): [0.1728792],
            ("gradients", "w"): [[0.3220257], [0.4949049]]}


def send(client, case: Case, example: dict):
    headers = dict(case.headers)
    if case.keyed and "Authorization" not in headers and case.code != "unauthorized":
        headers["Authorization"] = f"Bearer {KEY}"
    return client.open(case.path, method=case.method, headers=headers,
                       data=case.payload(example), environ_overrides=case.environ)


def check_example(response) -> None:
    assert response.status_code == 200, response.data[:500]
    body = response.get_json()
    for (part, name), want in EXPECTED.items():
        np.testing.assert_allclose(body[part][name]["data"], want, rtol=1e-6)


@pytest.fixture(scope="module")
def clients():
    return {False: create_app(Settings()).test_client(),
            True: create_app(Settings(api_keys=(KEY,))).test_client()}


def test_the_table_is_big_and_its_codes_are_documented():
    assert len(CASES) >= 45
    assert len({c.name for c in CASES}) == len(CASES)
    for c in CASES:
        assert CODES[c.code][0] == c.status, c.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_its_4xx_and_the_next_request_succeeds(case, clients, example):
    client = clients[case.keyed]
    r = send(client, case, example)
    problem = r.get_json(force=True, silent=True) or {}
    assert (r.status_code, problem.get("code")) == (case.status, case.code), r.data[:500]
    assert r.mimetype == "application/problem+json"
    assert problem["status"] == case.status and problem["title"] and problem["detail"]
    for e in problem.get("errors", []):
        assert e["pointer"] == "" or e["pointer"].startswith("/"), e
    if case.status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    if case.status == 405:
        assert r.headers["Allow"]
    assert "Location" not in r.headers
    assert len(problem.get("errors", [])) <= Settings().max_errors
    auth = {"Authorization": f"Bearer {KEY}"} if case.keyed else {}
    check_example(client.post("/v1/evaluate", json=example, headers=auth))


# ---- hostile inputs that must be answered, and right (issue 15, items 6 and 10) -------------

EMPTY = {"shape": [0, 3], "data": [], "requires_grad": True}
ZERO_SIZE = {name: graph({"x": EMPTY}, [node("y", name, ["x", "x"] if name == "mul" else ["x"],
                                             **({"exponent": 2} if name == "pow" else {})),
                                        node("s", "sum", ["y"])], grad={"of": "s"})
             for name in ("mul", "pow", "abs", "exp", "sin", "cos", "tan", "sigmoid", "tanh")}


@pytest.mark.parametrize("name", sorted(ZERO_SIZE))
def test_a_gradient_through_a_zero_size_tensor(clients, name):
    r = clients[False].post("/v1/evaluate", json=ZERO_SIZE[name])
    assert r.status_code == 200, r.data[:500]
    assert r.get_json()["gradients"]["x"] == {"shape": [0, 3], "dtype": "float32", "data": []}


def test_zero_and_negative_zero_literals_stay_apart(clients):
    body = graph({"x": data([1.0])}, [node("n", "mul", ["x", -0.0]), node("p", "mul", ["x", 0.0]),
                                      node("a", "div", [1, "n"]), node("b", "div", [1, "p"])],
                 outputs=["a", "b"])
    out = clients[False].post("/v1/evaluate", json=body).get_json()["outputs"]
    assert (out["a"]["data"], out["b"]["data"]) == (["-Infinity"], ["Infinity"])
