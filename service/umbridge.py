"""UM-Bridge protocol 1.0 under /umbridge (PROTOCOL.md §10): a translation, nothing more.

Each model input is one UM-Bridge input vector (the tensor flattened in C
order) and each output one output vector. A call becomes the body of a model
evaluate (service/models.py), whose answer is flattened back: Evaluate is the
outputs, Gradient a `grad` (Jᵀ·sens), ApplyJacobian a `jvp` (J·vec),
ApplyHessian an `hvp`. Every model supports all four.

UM-Bridge's own habits, kept so that its clients and conformity suite work:
bodies are JSON whatever their Content-Type says; errors are
`{"error": {"type", "message"}}` with 400 for the client's mistakes; checks
run in its order (model, inputs, outWrt, inWrt, then the vectors);
non-finite numbers are written as the bare tokens NaN, Infinity, -Infinity,
which its Python clients parse, and read the same way.
"""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
from flask import Response, current_app, request

from .errors import ApiError
from .models import Model, served
from .openapi import Route

PREFIX = "/umbridge/"
VERSION = 1.0
TYPES = {"InvalidInput", "InvalidOutput", "ModelNotFound", "UnsupportedFeature"}
# Every derivative of every model is exact (PROTOCOL.md §8), so every feature is there.
SUPPORT = {"Evaluate": True, "Gradient": True, "ApplyJacobian": True, "ApplyHessian": True}
# Statuses other than the client's mistakes (400), with a type of their own.
OTHER = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "InvalidInput",
         429: "Overloaded", 503: "NotReady", 504: "Timeout", 500: "InternalError"}


def invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidInput", message)


def error_response(err: ApiError) -> Response:
    """Any failure on these routes as UM-Bridge's error body."""
    if err.code in TYPES:
        kind, status = err.code, err.status
    elif err.status in OTHER:
        kind, status = OTHER[err.status], err.status
    else:  # 400, 415, 422: the input is not what the model takes
        kind, status = "InvalidInput", 400
    body = {"error": {"type": kind, "message": err.detail}}
    return Response(orjson.dumps(body), status=status, mimetype="application/json",
                    headers=err.headers)


def _json(obj) -> Response:
    try:
        text = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        text = None
    if text is None or b"null" in text:  # orjson writes NaN as null; UM-Bridge wants NaN
        text = json.dumps(_plain(obj)).encode()
    return Response(text, mimetype="application/json")


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ---- reading a call -------------------------------------------------------------------------

def _body() -> dict:
    raw = request.get_data(cache=False)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # Python's json module, which UM-Bridge's clients use, writes NaN bare
            doc = json.loads(raw, parse_int=_int)
        except (ValueError, RecursionError):
            raise invalid("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise invalid("the body must be a JSON object")
    return doc


def _int(text: str) -> int | float:
    """An integer as orjson reads one: past 64 bits it is a number, not a bignum."""
    return int(text) if len(text) < 19 else float(text)


def _call() -> tuple[dict, Model]:
    """The body and its model, checked in UM-Bridge's order: the model first."""
    doc = _body()
    name = doc.get("name")
    model = served().get(name) if isinstance(name, str) else None
    if model is None:
        raise ApiError(400, "ModelNotFound", f"model {name!r} not found; this server has "
                       f"{list(served())}")
    return doc, model


def _vector(value, n: int, what: str) -> list:
    if not isinstance(value, list):
        raise invalid(f"{what} must be a list of numbers")
    if len(value) != n:
        raise invalid(f"{what} has length {len(value)}; the model needs {n}")
    return value


def _inputs(doc: dict, model: Model) -> dict:
    """`input`, a list of vectors, as the model's input tensors."""
    vectors = doc.get("input")
    if not isinstance(vectors, list):
        raise invalid("input must be a list of input vectors")
    if len(vectors) != len(model.inputs):
        raise invalid(f"{len(vectors)} input vectors; model {model.name!r} takes "
                      f"{len(model.inputs)}")
    return {name: {"shape": list(shape),
                   "data": _vector(v, math.prod(shape), f"input vector {i}")}
            for i, (v, (name, shape)) in enumerate(zip(vectors, model.inputs.items(),
                                                       strict=True))}


def _index(doc: dict, key: str, names: list[str]) -> str:
    i = doc.get(key)
    if type(i) is not int or not 0 <= i < len(names):
        raise invalid(f"{key} must be an index from 0 to {len(names) - 1}, not {i!r}")
    return names[i]


def _tensor(value, shape, what: str) -> dict:
    return {"shape": list(shape), "data": _vector(value, math.prod(shape), what)}


def _run(model: Model, body: dict) -> dict:
    rt = current_app.extensions["gradserve"]
    return model.evaluate({**body, "encoding": "flat"}, rt.settings, rt.plans)


def _flat(t: dict) -> np.ndarray:
    """A response tensor of encoding flat; non-finite values come as strings there."""
    return np.asarray(t["data"], np.float64).reshape(-1)


# ---- the routes -----------------------------------------------------------------------------

def umbridge_info():
    return _json({"protocolVersion": VERSION, "models": list(served())})


def umbridge_model_info():
    _call()
    return _json({"support": SUPPORT})


def umbridge_input_sizes():
    _, model = _call()
    return _json({"inputSizes": [math.prod(s) for s in model.inputs.values()]})


def umbridge_output_sizes():
    _, model = _call()
    return _json({"outputSizes": [math.prod(s) for s in model.outputs.values()]})


def umbridge_evaluate():
    doc, model = _call()
    answer = _run(model, {"inputs": _inputs(doc, model)})
    return _json({"output": [_flat(answer["outputs"][k]) for k in model.outputs]})


def _derivative(*wrt: str) -> tuple[dict, Model, dict, str, list[str]]:
    """A derivative call's body, model, inputs, output outWrt and the inputs named by `wrt`
    (inWrt, or inWrt1 and inWrt2), checked in that order."""
    doc, model = _call()
    inputs = _inputs(doc, model)
    of = _index(doc, "outWrt", list(model.outputs))
    return doc, model, inputs, of, [_index(doc, key, list(model.inputs)) for key in wrt]


def _answer(model: Model, inputs: dict, part: str, key: str, **members) -> Response:
    """Run the model with these request members; answer with one flat vector of the result."""
    answer = _run(model, {"inputs": inputs, "outputs": [], **members})
    return _json({"output": _flat(answer[part][key])})


def umbridge_gradient():
    """Jᵀ·sens: the gradient of sens · output outWrt with respect to input inWrt."""
    doc, model, inputs, of, (wrt,) = _derivative("inWrt")
    seed = _tensor(doc.get("sens"), model.outputs[of], "sens")
    return _answer(model, inputs, "gradients", wrt, grad={"of": of, "seed": seed, "wrt": [wrt]})


def umbridge_apply_jacobian():
    """J·vec: the derivative of output outWrt along vec on input inWrt."""
    doc, model, inputs, of, (wrt,) = _derivative("inWrt")
    vec = _tensor(doc.get("vec"), model.inputs[wrt], "vec")
    return _answer(model, inputs, "jvp", of, jvp={"tangents": {wrt: vec}, "of": [of]})


def umbridge_apply_hessian():
    """Σ_j ∂²(sens · output outWrt) / ∂inWrt1 ∂inWrt2_j · vec_j, sized like input inWrt1."""
    doc, model, inputs, of, (wrt1, wrt2) = _derivative("inWrt1", "inWrt2")
    seed = _tensor(doc.get("sens"), model.outputs[of], "sens")
    vec = _tensor(doc.get("vec"), model.inputs[wrt2], "vec")
    return _answer(model, inputs, "hvp", wrt1, hvp={"of": of, "seed": seed, "wrt": [wrt1],
                                                      "tangents": {wrt2: vec}})


def _route(method: str, name: str, view, summary: str) -> Route:
    return Route(method, PREFIX + name, view, summary, None, any_media=method == "POST",
                 openapi=False)


ROUTES = [
    _route("GET", "Info", umbridge_info, "UM-Bridge: protocol version and models"),
    _route("POST", "ModelInfo", umbridge_model_info, "UM-Bridge: the features of a model"),
    _route("POST", "InputSizes", umbridge_input_sizes, "UM-Bridge: input vector lengths"),
    _route("POST", "OutputSizes", umbridge_output_sizes, "UM-Bridge: output vector lengths"),
    _route("POST", "Evaluate", umbridge_evaluate, "UM-Bridge: the outputs"),
    _route("POST", "Gradient", umbridge_gradient, "UM-Bridge: Jᵀ·sens"),
    _route("POST", "ApplyJacobian", umbridge_apply_jacobian, "UM-Bridge: J·vec"),
    _route("POST", "ApplyHessian", umbridge_apply_hessian, "UM-Bridge: a Hessian-vector product"),
]
