"""Models (PROTOCOL.md §10) through the app: loading and its errors, GET /v1/models, and a
model evaluate, which must answer exactly as the /v1/evaluate request it stands for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.app import create_app
from service.config import Settings
from service.models import ModelLoadError
from tests.service.test_app import ok, problem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "models"

# Two inputs (one a matrix), a constant, two outputs: y = A x + b, loss = sum(y * y).
AFFINE = {
    "description": "y = A x + b and the loss |y|²",
    "inputs": {"A": {"shape": [2, 3]}, "x": {"shape": [3]}},
    "constants": {"b": {"data": [0.5, -0.5]}},
    "nodes": [
        {"id": "A2", "op": "reshape", "args": ["x"], "attrs": {"shape": [3, 1]}},
        {"id": "Ax", "op": "matmul", "args": ["A", "A2"]},
        {"id": "Ax1", "op": "reshape", "args": ["Ax"], "attrs": {"shape": [2]}},
        {"id": "y", "op": "add", "args": ["Ax1", "b"]},
        {"id": "yy", "op": "mul", "args": ["y", "y"]},
        {"id": "loss", "op": "sum", "args": ["yy"]},
    ],
    "outputs": ["y", "loss"],
}


def write(folder: Path, **files) -> Path:
    folder.mkdir(exist_ok=True)
    for name, doc in files.items():
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (folder / f"{name}.json").write_text(text)
    return folder


def examples_and_affine(folder: Path) -> Path:
    """The repository's example models and AFFINE, in `folder`."""
    for f in EXAMPLES.glob("*.json"):
        (folder / f.name).write_text(f.read_text())
    return write(folder, affine=AFFINE)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return examples_and_affine(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def c(models_dir):
    return create_app(Settings(models_dir=str(models_dir))).test_client()


def test_the_examples_are_listed_in_name_order_with_their_shapes(c):
    listed = ok(c.get("/v1/models"))["models"]
    assert [m["name"] for m in listed] == ["affine", "banana", "gauss"]
    affine = ok(c.get("/v1/models/affine"))
    assert affine == {"name": "affine", "description": AFFINE["description"],
                      "dtype": "float64",
                      "inputs": [{"name": "A", "shape": [2, 3]}, {"name": "x", "shape": [3]}],
                      "outputs": [{"name": "y", "shape": [2]}, {"name": "loss", "shape": []}]}
    assert listed[0] == affine


def gauss(theta):
    mu, inv_var = np.array([1.0, -1.0]), np.array([1.0, 0.25])
    return -0.5 * np.sum((theta - mu) ** 2 * inv_var), -(theta - mu) * inv_var


def banana(theta):
    x, y = theta
    value = -((1 - x) ** 2 + 100 * (y - x * x) ** 2) / 20
    return value, np.array([(2 * (1 - x) + 400 * x * (y - x * x)) / 20, -200 * (y - x * x) / 20])


@pytest.mark.parametrize("name, reference", [("gauss", gauss), ("banana", banana)])
@pytest.mark.parametrize("theta", [[0.5, 0.5], [-1.2, 1.0], [3.0, -2.0]])
def test_example_posteriors_give_their_log_density_and_its_gradient(c, name, reference, theta):
    body = ok(c.post(f"/v1/models/{name}/evaluate",
                     json={"inputs": {"theta": {"data": theta}}, "grad": {"of": "logp"}}))
    value, grad = reference(np.array(theta))
    assert body["outputs"]["logp"]["dtype"] == "float64"
    np.testing.assert_allclose(body["outputs"]["logp"]["data"], value, rtol=1e-12)
    np.testing.assert_allclose(body["gradients"]["theta"]["data"], grad, rtol=1e-12, atol=1e-12)


def test_a_model_evaluate_is_the_v1_evaluate_it_stands_for(c):
    rng = np.random.default_rng(0)
    A, x = rng.normal(size=(2, 3)), rng.normal(size=3)
    sent = {"inputs": {"A": {"data": A.tolist()}, "x": {"shape": [3], "data": x.tolist()}},
            "grad": {"of": "loss"}, "encoding": "flat"}
    model = ok(c.post("/v1/models/affine/evaluate", json=sent))
    direct = {**sent, "nodes": AFFINE["nodes"], "dtype": "float64", "outputs": ["y", "loss"],
              "inputs": {"A": {"data": A.tolist(), "requires_grad": True},
                         "x": {"data": x.tolist(), "requires_grad": True},
                         "b": {"data": [0.5, -0.5]}}}
    plain = ok(c.post("/v1/evaluate", json=direct))
    for part in ("outputs", "gradients"):
        assert model[part] == plain[part]
    assert list(model["gradients"]) == ["A", "x"]  # every model input, no constant
    y = A @ x + [0.5, -0.5]
    np.testing.assert_allclose(model["gradients"]["x"]["data"], 2 * A.T @ y, rtol=1e-12)


def test_outputs_and_wrt_may_be_chosen_by_the_client(c):
    body = ok(c.post("/v1/models/affine/evaluate", json={
        "inputs": {"A": {"data": [[1, 0, 0], [0, 1, 0]]}, "x": {"data": [1, 2, 3]}},
        "outputs": ["Ax"], "grad": {"of": "loss", "wrt": ["x"]}}))
    assert list(body["outputs"]) == ["Ax"] and list(body["gradients"]) == ["x"]
    assert body["outputs"]["Ax"]["data"] == [[1.0], [2.0]]


AT = {"A": {"data": [[1, 0, 0], [0, 1, 0]]}, "x": {"data": [1, 2, 3]}}

ERRORS = [
    # name, path, body, status, code, pointer
    ("unknown model", "/v1/models/nope/evaluate", {"inputs": AT}, 404, "unknown_model", None),
    ("input of another shape", "/v1/models/affine/evaluate",
     {"inputs": {**AT, "x": {"data": [1, 2]}}}, 422, "shape_mismatch", "/inputs/x"),
    ("flat input of another shape", "/v1/models/affine/evaluate",
     {"inputs": {**AT, "x": {"shape": [1, 3], "data": [1, 2, 3]}}}, 422, "shape_mismatch",
     "/inputs/x"),
    ("an input the model lacks", "/v1/models/affine/evaluate",
     {"inputs": {**AT, "z": {"data": 1}}}, 422, "unknown_id", "/inputs/z"),
    ("a constant sent as an input", "/v1/models/affine/evaluate",
     {"inputs": {**AT, "b": {"data": [0, 0]}}}, 422, "unknown_id", "/inputs/b"),
    ("a missing input", "/v1/models/affine/evaluate", {"inputs": {"A": AT["A"]}}, 422,
     "validation_error", "/inputs/x"),
    ("nodes of the client's own", "/v1/models/affine/evaluate", {"inputs": AT, "nodes": []},
     422, "validation_error", "/nodes"),
    ("a dtype of the client's own", "/v1/models/affine/evaluate",
     {"inputs": AT, "dtype": "float32"}, 422, "validation_error", "/dtype"),
    ("ragged data", "/v1/models/affine/evaluate",
     {"inputs": {**AT, "A": {"data": [[1, 0, 0], [0, 1]]}}}, 422, "bad_tensor", "/inputs/A/data/0"),
    ("grad of an unknown id", "/v1/models/affine/evaluate",
     {"inputs": AT, "grad": {"of": "nope"}}, 422, "unknown_id", "/grad/of"),
    ("not an object", "/v1/models/affine/evaluate", [1, 2], 400, "malformed_json", None),
    ("no inputs", "/v1/models/affine/evaluate", {}, 422, "validation_error", "/inputs"),
    ("unknown model info", "/v1/models/nope", None, 404, "unknown_model", None),
]


@pytest.mark.parametrize("name, path, body, status, code, where", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_errors(c, name, path, body, status, code, where):
    r = c.get(path) if body is None else c.post(path, json=body)
    err = problem(r, status, code)
    if where is not None:
        assert where in [e["pointer"] for e in err["errors"]], err


def test_a_model_evaluate_wants_json(c):
    r = c.post("/v1/models/gauss/evaluate", data=b'{"inputs": {}}', content_type="text/plain")
    problem(r, 415, "unsupported_media_type")


def test_model_routes_need_a_key_when_there_are_keys(models_dir):
    keyed = create_app(Settings(models_dir=str(models_dir), api_keys=("k",))).test_client()
    for path in ("/v1/models", "/v1/models/gauss"):
        problem(keyed.get(path), 401, "unauthorized")
        ok(keyed.get(path, headers={"Authorization": "Bearer k"}))
        ok(keyed.get(path, auth=("", "k")))  # HTTP Basic, the key as the password
        problem(keyed.get(path, auth=("", "wrong")), 401, "unauthorized")
        problem(keyed.get(path, auth=("k", "")), 401, "unauthorized")


def test_the_document_describes_the_model_routes(c):
    paths = ok(c.get("/openapi.json"))["paths"]
    assert {"/v1/models", "/v1/models/{name}", "/v1/models/{name}/evaluate"} <= set(paths)
    body = paths["/v1/models/{name}/evaluate"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelEvaluateRequest"}
    assert not any(p.startswith("/umbridge") for p in paths)  # UM-Bridge's own protocol


# ---- loading --------------------------------------------------------------------------------

GOOD = json.loads((EXAMPLES / "gauss.json").read_text())


def edit(**changes) -> dict:
    doc = json.loads(json.dumps(GOOD))
    doc.update(changes)
    return doc


LOAD_ERRORS = [
    # name, file name, content, pointer, words in the problem
    ("not JSON", "m", "{nodes: []}", "/", "not valid JSON"),
    ("a bare NaN", "m", '{"inputs": {"x": {"shape": [NaN]}}}', "/", "not valid JSON"),
    ("an unknown member", "m", edit(extra=1), "/extra", "Extra inputs"),
    ("no inputs", "m", edit(inputs={}), "/inputs", "at least 1"),
    ("an unknown op", "m", edit(nodes=[{"id": "y", "op": "frobnicate", "args": ["theta"]}],
                                 outputs=None), "/nodes/0/op", "frobnicate"),
    ("an unknown id", "m", edit(nodes=[{"id": "y", "op": "exp", "args": ["phi"]}],
                                 outputs=None), "/nodes/0/args/0", "phi"),
    ("shapes that do not fit", "m",
     edit(constants={**GOOD["constants"], "mu": {"data": [1, 2, 3]}}), "/nodes/0/args",
     "(2,) and (3,)"),
    ("a bad constant", "m", edit(constants={**GOOD["constants"], "mu": {"data": [1, "x"]}}),
     "/constants/mu/data/1", "a string"),
    ("a constant named like an input", "m", edit(constants={"theta": {"data": [1, 2]}}),
     "/constants/theta", "both an input and a constant"),
    ("an unknown output", "m", edit(outputs=["nope"]), "/outputs/0", "nope"),
    ("a name off the id pattern", "9lives", GOOD, "/", "must match"),
    ("a bad expression", "m", edit(nodes=[], expr={"logp": "sum(theta - mu) +"}),
     "/expr/logp", "column"),
    ("an expression naming nothing", "m", edit(nodes=[], expr={"logp": "sum(phi)"}),
     "/expr/logp", "phi"),
]


@pytest.mark.parametrize("name, stem, content, where, words", LOAD_ERRORS,
                         ids=[e[0] for e in LOAD_ERRORS])
def test_a_bad_model_file_stops_the_app_naming_file_pointer_and_problem(
        tmp_path, name, stem, content, where, words):
    write(tmp_path, ok=GOOD, **{stem: content})
    with pytest.raises(ModelLoadError) as e:
        create_app(Settings(models_dir=str(tmp_path)))
    message = str(e.value)
    assert f"{stem}.json" in message and f"at {where}:" in message and words in message, message


def test_a_models_dir_that_is_not_a_folder_stops_the_app(tmp_path):
    with pytest.raises(ModelLoadError, match="not a folder"):
        create_app(Settings(models_dir=str(tmp_path / "missing")))


def test_no_models_dir_serves_no_models():
    assert ok(create_app(Settings()).test_client().get("/v1/models")) == {"models": []}


GAUSS_EXPR = {**{k: v for k, v in GOOD.items() if k != "nodes"},
              "expr": {"logp": "-0.5 * sum((theta - mu) * (theta - mu) * inv_var)"}}


def test_a_model_may_give_its_nodes_as_expressions(tmp_path):
    from client import Client
    write(tmp_path, gauss=GOOD, gauss_expr=GAUSS_EXPR)
    c = create_app(Settings(models_dir=str(tmp_path))).test_client()
    local = Client.local(models_dir=tmp_path)
    body = {"inputs": {"theta": {"data": [0.3, -0.8]}}, "grad": {"of": "logp"}}
    want = ok(c.post("/v1/models/gauss/evaluate", json=body))
    got = ok(c.post("/v1/models/gauss_expr/evaluate", json=body))
    assert ok(c.get("/v1/models/gauss_expr"))["outputs"] == [{"name": "logp", "shape": []}]
    for part in ("outputs", "gradients"):
        for k, t in want[part].items():
            np.testing.assert_allclose(got[part][k]["data"], t["data"], rtol=1e-12)
    m = local.model("gauss_expr")
    np.testing.assert_allclose(m.grad(np.array([0.3, -0.8])), want["gradients"]["theta"]["data"],
                               rtol=1e-12)
