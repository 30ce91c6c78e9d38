"""The Tesseract runtime API under /tesseract/NAME (PROTOCOL.md §10): a translation.

Each model is one Tesseract whose inputs and outputs are the model's, every
one a differentiable array. A call becomes the body of a model evaluate
(service/models.py): apply is the outputs, vector_jacobian_product a `grad`
per output summed, jacobian_vector_product a `jvp`, jacobian a `jacobian`.
Every endpoint is listed in the model's openapi.json, from which the Tesseract
client decides what to call.

Arrays come as Tesseract writes them (`{"shape", "dtype", "data": {"buffer",
"encoding"}}`, base64 or a JSON buffer; `object_type` optional) or as plain
JSON numbers and lists; they go out base64 (json when the client's Accept
asks for application/json), compressed with LZ4 when it asks for
compression=lz4. Errors are FastAPI's, as Tesseract's runtime writes them:
422 with a `detail` list of `{"type", "loc", "msg"}`, else `{"detail": "..."}`.
"""

from __future__ import annotations

import binascii

import lz4.frame
import numpy as np
import orjson
import pybase64
from flask import Response, current_app, request

from .errors import ApiError
from .models import Model, find
from .openapi import Route

PREFIX = "/tesseract/"
FORMATS = ("json+base64", "json")
COMPRESSIONS = ("none", "lz4")
# The endpoints that compute, each one /v1/evaluate member (abstract_eval only plans).
ENDPOINTS = ("apply", "vector_jacobian_product", "jacobian", "jacobian_vector_product")


def _invalid(loc: tuple, msg: str, kind: str = "value_error") -> ApiError:
    return ApiError(422, kind, msg, [{"pointer": "/" + "/".join(map(str, loc)), "detail": msg}])


def error_response(err: ApiError) -> Response:
    """Any failure on these routes as Tesseract's runtime (FastAPI) writes it."""
    if err.status == 422 or (err.status == 400 and err.code != "malformed_json"):
        items = err.errors or [{"pointer": "", "detail": err.detail}]
        detail = [{"type": err.code, "msg": e["detail"],
                   "loc": ["body", *[p for p in e["pointer"].split("/")[1:] if p]]}
                  for e in items]
        return Response(orjson.dumps({"detail": detail}), status=422,
                        mimetype="application/json", headers=err.headers)
    return Response(orjson.dumps({"detail": err.detail}), status=err.status,
                    mimetype="application/json", headers=err.headers)


# ---- arrays in and out ----------------------------------------------------------------------

def _tensor(value, loc: tuple) -> dict:
    """A Tesseract array, or plain JSON numbers, as a gradserve request tensor."""
    if not isinstance(value, dict):
        return {"data": value}
    data, shape = value.get("data"), value.get("shape")
    if not isinstance(data, dict) or not isinstance(shape, list):
        raise _invalid(loc, "an array is {shape, dtype, data: {buffer, encoding}}")
    encoding, buffer = data.get("encoding"), data.get("buffer")
    if encoding in ("json", "raw"):
        return {"shape": shape, "data": buffer}
    if encoding != "base64" or not isinstance(buffer, str):
        raise _invalid(loc + ("data", "encoding"), "the encoding must be base64 or json")
    try:
        dtype = np.dtype(value.get("dtype"))
        raw = pybase64.b64decode(buffer, validate=True)
        if data.get("compression") == "lz4":
            raw = lz4.frame.decompress(raw)
        a = np.frombuffer(raw, dtype.newbyteorder("<")).reshape(shape)
    except (TypeError, ValueError, binascii.Error, RuntimeError) as e:
        raise _invalid(loc, f"not an array of that shape and dtype: {e}") from None
    if a.dtype.kind not in "fiub":
        raise _invalid(loc + ("dtype",), f"dtype {a.dtype} is not a real number type")
    return {"shape": shape, "dtype": "float64",
            "b64": pybase64.b64encode(np.ascontiguousarray(a, "<f8")).decode()}


def _wanted() -> tuple[str, str]:
    """The output format and compression the client's Accept asks for."""
    media, *params = [p.strip() for p in request.headers.get("Accept", "").split(";")]
    fmt = media.removeprefix("application/")
    fmt = fmt if fmt in FORMATS else "json+base64"
    options = dict(p.partition("=")[::2] for p in params)
    return fmt, options.get("compression", "none")


def _array(a: np.ndarray, fmt: str, compression: str) -> dict:
    if fmt == "json":
        data = {"buffer": a.tolist(), "encoding": "json"}
    else:
        raw = np.ascontiguousarray(a).tobytes()
        data = {"buffer": "", "encoding": "base64"}
        if compression == "lz4":
            raw = lz4.frame.compress(raw)
            data["compression"] = "lz4"
        data["buffer"] = pybase64.b64encode(raw).decode()
    return {"object_type": "array", "shape": list(a.shape), "dtype": a.dtype.name, "data": data}


def _answer(tree) -> Response:
    fmt, compression = _wanted()

    def walk(node):
        if isinstance(node, np.ndarray):
            return _array(node, fmt, compression)
        return {k: walk(v) for k, v in node.items()}

    return Response(orjson.dumps(walk(tree)), mimetype="application/json")


def _values(t: dict, dtype: str) -> np.ndarray:
    """A flat response tensor as an array of its shape (non-finite values came as strings)."""
    return np.asarray(t["data"], dtype).reshape(t["shape"])


# ---- calls ----------------------------------------------------------------------------------

def _body() -> dict:
    try:
        doc = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _invalid((), "the body must be a JSON object", "model_attributes_type")
    return doc


def _call(name: str) -> tuple[dict, Model, dict]:
    """The body, the model and its inputs as request tensors; every input required."""
    model, doc = find(name), _body()
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict):
        raise _invalid(("inputs",), "inputs must be an object of the model's inputs", "missing")
    for k in model.inputs:
        if k not in inputs:
            raise _invalid(("inputs", k), "Field required", "missing")
    for k in inputs:
        if k not in model.inputs:
            raise _invalid(("inputs", k), "Extra inputs are not permitted", "extra_forbidden")
    return doc, model, {k: _tensor(inputs[k], ("inputs", k)) for k in model.inputs}


def _names(doc: dict, key: str, allowed) -> list[str]:
    names = doc.get(key)
    if not isinstance(names, list) or not names or any(n not in allowed for n in names):
        raise _invalid((key,), f"{key} must list names among {list(allowed)}")
    return names


def _run(model: Model, body: dict) -> dict:
    rt = current_app.extensions["gradserve"]
    return model.evaluate({**body, "encoding": "flat"}, rt.settings, rt.plans)


def tesseract_health(name: str):
    find(name)
    return Response(orjson.dumps({"status": "ok"}), mimetype="application/json")


def tesseract_apply(name: str):
    _, model, inputs = _call(name)
    answer = _run(model, {"inputs": inputs})
    return _answer({k: _values(t, model.dtype) for k, t in answer["outputs"].items()})


def _product(name: str, prefix: str, key: str, over: str):
    """A product call's model, inputs, `{prefix}_inputs`, `{prefix}_outputs` and its vectors
    `key`, one for each name of `{prefix}_{over}`."""
    doc, model, inputs = _call(name)
    wrt = _names(doc, f"{prefix}_inputs", model.inputs)
    outs = _names(doc, f"{prefix}_outputs", model.outputs)
    vectors = doc.get(key)
    if not isinstance(vectors, dict) or set(vectors) != set(wrt if over == "inputs" else outs):
        raise _invalid((key,), f"one vector for each name of {prefix}_{over}")
    return model, inputs, wrt, outs, {k: _tensor(v, (key, k)) for k, v in vectors.items()}


def tesseract_vector_jacobian_product(name: str):
    """Σ over vjp_outputs of cotangentᵀ · ∂output/∂input, for each of vjp_inputs."""
    model, inputs, wrt, outs, seeds = _product(name, "vjp", "cotangent_vector",
                                               "outputs")
    rt = current_app.extensions["gradserve"]
    answer = model.vjp({"inputs": inputs, "encoding": "flat"}, {o: seeds[o] for o in outs},
                       wrt, rt.settings, rt.plans, where=("cotangent_vector",))
    return _answer({k: _values(answer["gradients"][k], model.dtype) for k in wrt})


def tesseract_jacobian_vector_product(name: str):
    """∂output/∂inputs · tangents, for each of jvp_outputs."""
    model, inputs, _, outs, tangents = _product(name, "jvp", "tangent_vector",
                                                "inputs")
    answer = _run(model, {"inputs": inputs, "outputs": [],
                          "jvp": {"tangents": tangents, "of": outs}})
    return _answer({k: _values(t, model.dtype) for k, t in answer["jvp"].items()})


def tesseract_jacobian(name: str):
    doc, model, inputs = _call(name)
    wrt = _names(doc, "jac_inputs", model.inputs)
    outs = _names(doc, "jac_outputs", model.outputs)
    answer = _run(model, {"inputs": inputs, "outputs": [],
                          "jacobian": {"of": outs, "wrt": wrt}})
    return _answer({y: {x: _values(t, model.dtype) for x, t in by_x.items()}
                    for y, by_x in answer["jacobians"].items()})


def tesseract_abstract_eval(name: str):
    """Shapes and dtypes of the outputs, from the shapes of the inputs: nothing is computed."""
    model, doc = find(name), _body()
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict):
        raise _invalid(("inputs",), "inputs must be an object of {shape, dtype}", "missing")
    for k, shape in model.inputs.items():
        given = inputs.get(k)
        if not isinstance(given, dict) or given.get("shape") != list(shape):
            raise _invalid(("inputs", k), f"input {k!r} has shape {list(shape)}")
    return Response(orjson.dumps({k: {"shape": list(s), "dtype": model.dtype}
                                  for k, s in model.outputs.items()}),
                    mimetype="application/json")


# ---- the model's own OpenAPI document --------------------------------------------------------

def _arrays_schema(title: str, shapes: dict, dtype: str) -> dict:
    props = {k: {"title": k, "type": "object", "description": f"array of shape {list(s)}",
                 "properties": {"object_type": {"const": "array"},
                                "shape": {"const": list(s)}, "dtype": {"const": dtype},
                                "data": {"type": "object"}}}
             for k, s in shapes.items()}
    return {"title": title, "type": "object", "properties": props, "required": list(shapes),
            "differentiable_arrays": {k: {"shape": list(s), "dtype": dtype}
                                      for k, s in shapes.items()}}


def tesseract_openapi(name: str):
    model = find(name)
    ref = "#/components/schemas/{}".format
    paths = {"/health": {"get": {"operationId": "health", "responses": {"200": {
        "description": "OK"}}}}}
    for endpoint in [*ENDPOINTS, "abstract_eval"]:
        paths[f"/{endpoint}"] = {"post": {"operationId": endpoint, "responses": {
            "200": {"description": "OK"}, "422": {"description": "Validation Error"}}}}
    inputs = _arrays_schema("Apply_InputSchema", model.inputs, model.dtype)
    outputs = _arrays_schema("Apply_OutputSchema", model.outputs, model.dtype)
    doc = {
        "openapi": "3.1.0",
        "info": {"title": model.name, "description": model.description, "version": "1.0.0"},
        "x-supported-output-formats": list(FORMATS),
        "x-supported-gpu-transports": ["none"],
        "x-supported-compressions": list(COMPRESSIONS),
        "paths": paths,
        "components": {"schemas": {
            "Apply_InputSchema": inputs, "Apply_OutputSchema": outputs,
            "ApplyInputSchema": {"title": "ApplyInputSchema", "type": "object",
                                 "properties": {"inputs": {"$ref": ref("Apply_InputSchema")}},
                                 "required": ["inputs"],
                                 "differentiable_arrays": inputs["differentiable_arrays"]},
            "ApplyOutputSchema": {"title": "ApplyOutputSchema",
                                  "$ref": ref("Apply_OutputSchema"),
                                  "differentiable_arrays": outputs["differentiable_arrays"]},
        }},
    }
    return Response(orjson.dumps(doc), mimetype="application/json")


def _route(method: str, endpoint: str, view) -> Route:
    return Route(method, f"{PREFIX}<name>/{endpoint}", view, f"Tesseract: {endpoint}", None,
                 any_media=method == "POST", openapi=False)


ROUTES = [
    _route("GET", "health", tesseract_health),
    _route("GET", "openapi.json", tesseract_openapi),
    _route("POST", "apply", tesseract_apply),
    _route("POST", "vector_jacobian_product", tesseract_vector_jacobian_product),
    _route("POST", "jacobian_vector_product", tesseract_jacobian_vector_product),
    _route("POST", "jacobian", tesseract_jacobian),
    _route("POST", "abstract_eval", tesseract_abstract_eval),
]
