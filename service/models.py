"""Models: graphs stored with the server (PROTOCOL.md §10), loaded and checked at start.

A model evaluate is a /v1/evaluate: the stored nodes and dtype, the constants
as plain inputs and the client's inputs as differentiable ones, plus the rest
of the client's body, make one EvaluateRequest that service/evaluate.py
answers like any other. So every member /v1/evaluate takes works on a model
too, the plans are the same plans, and UM-Bridge and Tesseract (their own
modules) are only translations into this request and out of its answer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybase64
from flask import Response, current_app, request
from pydantic import Field, create_model

from autograd import AutogradError
from autograd.expr import expand
from autograd.graph import ID

from . import codec
from . import evaluate as evaluation
from .config import Settings
from .errors import ApiError, pointer, to_api_error
from .openapi import Route
from .plans import PlanCache
from .schemas import (
    Dtype,
    EvaluateRequest,
    EvaluateResponse,
    GradSpec,
    Id,
    InputTensor,
    Node,
    Shape,
    Strict,
    TensorIn,
)

# ---- the model file -------------------------------------------------------------------------


class ModelInput(Strict):
    shape: Shape = Field(description="the input's shape; every model input is differentiable")


class ModelFile(Strict):
    """NAME.json in GRADSERVE_MODELS_DIR."""

    description: str = Field("", max_length=10_000)
    inputs: dict[Id, ModelInput] = Field(min_length=1, description="in order: UM-Bridge's order")
    constants: dict[Id, TensorIn] = Field({}, description="stored tensors, never differentiated")
    nodes: list[Node] = Field([], description="operations, as /v1/evaluate's")
    expr: dict[Id, str] | None = Field(None, description="nodes as expressions (PROTOCOL.md "
                                       "§12), expanded into nodes once, at load")
    outputs: list[Id] | None = Field(None, description="in order; default: every node no "
                                     "other node uses")
    dtype: Dtype = "float64"


class ModelLoadError(Exception):
    """A model file that cannot be served: the server does not start."""

    def __init__(self, path: Path, where: str, detail: str):
        super().__init__(f"model file {path}: at {where or '/'}: {detail}")


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    dtype: str
    inputs: dict[str, tuple[int, ...]]   # declared order
    outputs: dict[str, tuple[int, ...]]  # declared order, shapes from the check at load
    nodes: list                          # validated and expanded at load
    constants: dict[str, InputTensor]    # validated at load, as base64: decoded at no cost

    def describe(self) -> dict:
        """GET /v1/models/NAME."""
        return {"name": self.name, "description": self.description, "dtype": self.dtype,
                "inputs": [{"name": k, "shape": list(s)} for k, s in self.inputs.items()],
                "outputs": [{"name": k, "shape": list(s)} for k, s in self.outputs.items()]}

    def request(self, body) -> EvaluateRequest:
        """The /v1/evaluate request this model evaluate is: the client's body, with the
        model's nodes, dtype, constants and (unless the body names some) outputs."""
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_json", "the body must be a JSON object")
        for own in ("nodes", "dtype"):
            if own in body:
                raise ApiError(422, "validation_error", f"a model's {own} are its own; send "
                               f"inputs only", [{"pointer": f"/{own}", "detail": "not taken"}])
        doc = dict(body)
        if isinstance(body.get("inputs"), dict):
            doc["inputs"] = self._inputs(body["inputs"], _batched(body))
        doc["nodes"], doc["dtype"] = [], self.dtype
        doc.setdefault("outputs", list(self.outputs))
        req = EvaluateRequest.model_validate(doc)
        req.nodes = self.nodes  # validated at load: a model's nodes are not checked per call
        return req

    def _inputs(self, sent: dict, batched: frozenset) -> dict:
        """The client's inputs (exactly the model's, each of its shape, all differentiable)
        beside the constants."""
        for name in sent:
            if name not in self.inputs:
                raise _at(422, "unknown_id", ("inputs", name), f"the model {self.name!r} has no "
                          f"input {name!r}; its inputs are {list(self.inputs)}")
        merged = dict(self.constants)
        for name, shape in self.inputs.items():
            if name not in sent:
                raise _at(422, "validation_error", ("inputs", name),
                          f"the model's input {name!r} is missing")
            t = sent[name]
            if isinstance(t, dict):
                given = _shape_of(t)
                if given is not None and name in batched:
                    given = given[1:]
                if given is not None and given != shape:
                    raise _at(422, "shape_mismatch", ("inputs", name), f"input {name!r} has "
                              f"shape {list(given)}; the model takes {list(shape)}")
                t = {**t, "requires_grad": True}
            merged[name] = t
        return merged

    def evaluate(self, body, settings: Settings, plans: PlanCache) -> dict:
        return evaluation.evaluate(self.request(body), settings, plans)

    def vjp(self, body: dict, seeds: dict[str, dict], wrt: list[str], settings: Settings,
            plans: PlanCache, where: tuple = ("seeds",)) -> dict:
        """Σ over the outputs o of seeds[o]ᵀ · ∂o/∂x for each x of `wrt`, in one pass: the
        gradient of Σ_o sum(seeds[o] * o), the seeds standing beside the model's inputs as
        constants (a `grad` takes one `of`; Tesseract's VJP names several outputs). Each seed
        must have its output's shape exactly: `*` would broadcast one that does not. `where`
        is the seeds' place in the caller's body, for errors."""
        for of, seed in seeds.items():
            given = _shape_of(seed) if isinstance(seed, dict) else None
            if given != self.outputs[of]:
                raise _at(422, "shape_mismatch", (*where, of), f"the cotangent of {of!r} "
                          f"has shape {list(given or ())}; the output's is "
                          f"{list(self.outputs[of])}")
        if len(seeds) == 1:  # grad's own seed: no nodes added
            (of, seed), = seeds.items()
            return self.evaluate({**body, "outputs": [], "grad": {"of": of, "seed": seed,
                                                                  "wrt": wrt}}, settings, plans)
        req = self.request({**body, "outputs": []})
        taken = {*self.inputs, *self.constants, *(n["id"] for n in self.nodes)}
        fresh = (f"vjp:{k}" for k in itertools.count() if f"vjp:{k}" not in taken)
        terms, nodes = [], list(self.nodes)
        for of, seed in seeds.items():
            name, product, term = next(fresh), next(fresh), next(fresh)
            req.inputs[name] = InputTensor.model_validate(seed)
            nodes += [{"id": product, "op": "mul", "args": [of, name]},
                      {"id": term, "op": "sum", "args": [product]}]
            if terms:
                total = next(fresh)
                nodes.append({"id": total, "op": "add", "args": [terms[-1], term]})
                term = total
            terms.append(term)
        req.nodes = nodes
        req.grad = GradSpec(of=terms[-1], wrt=wrt)
        return evaluation.evaluate(req, settings, plans)


def _at(status: int, code: str, path: tuple, detail: str) -> ApiError:
    return ApiError(status, code, detail, [{"pointer": pointer(path), "detail": detail}])


def _batched(body: dict) -> frozenset:
    """Inputs that carry a leading batch axis (PROTOCOL.md §11's vmap)."""
    vmap = body.get("vmap")
    names = vmap.get("inputs") if isinstance(vmap, dict) else None
    return frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) \
        else frozenset()


def _shape_of(t: dict) -> tuple | None:
    """A request tensor's shape as sent, without decoding it: its `shape`, or the lengths
    down nested `data` (the codec refuses ragged data later). None when it cannot tell."""
    shape = t.get("shape")
    if shape is not None:
        ok = isinstance(shape, list) and all(type(d) is int for d in shape)
        return tuple(shape) if ok else None
    data, dims = t.get("data"), []
    while isinstance(data, list):
        dims.append(len(data))
        data = data[0] if data else None
    return tuple(dims)


# ---- loading --------------------------------------------------------------------------------

def load(folder: str, settings: Settings, plans: PlanCache) -> dict[str, Model]:
    """Every NAME.json in `folder`, validated, planned and run once; ModelLoadError names the
    file, the JSON pointer and the problem of the first bad one."""
    if not folder:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise ModelLoadError(root, "", "GRADSERVE_MODELS_DIR is not a folder")
    models = {}
    for path in sorted(root.glob("*.json")):
        if not ID.fullmatch(path.stem):
            raise ModelLoadError(path, "", f"the name {path.stem!r} must match {ID.pattern}")
        try:
            models[path.stem] = _load(path, settings, plans)
        except (ApiError, AutogradError, ValueError) as e:  # pydantic's ValidationError too
            err = to_api_error(e)
            where = err.errors[0]["pointer"] if err.errors else ""
            raise ModelLoadError(path, where, err.detail) from None
    return models


def _load(path: Path, settings: Settings, plans: PlanCache) -> Model:
    spec = ModelFile.model_validate(codec.loads(path.read_bytes()))
    dtype = np.dtype(spec.dtype)
    constants = {}
    for name, t in spec.constants.items():
        if name in spec.inputs:
            raise _at(422, "duplicate_id", ("constants", name), f"{name!r} is both an input "
                      f"and a constant")
        constants[name] = InputTensor.model_validate(_b64(codec.decode(
            t, dtype, ("constants", name), settings.max_elements)))
    nodes = expand([dict(n) for n in spec.nodes], spec.expr, [*spec.inputs, *constants],
                   max_nodes=settings.max_nodes)
    model = Model(path.stem, spec.description, spec.dtype,
                  {k: tuple(i.shape) for k, i in spec.inputs.items()}, {}, list(nodes),
                  constants)
    zeros = {k: _b64(np.zeros(s, dtype)) for k, s in model.inputs.items()}
    body = {"inputs": zeros, "encoding": "base64"}
    if spec.outputs is not None:
        body["outputs"] = spec.outputs
    try:
        answer = evaluation.evaluate(model.request(body), settings, plans)
    except (ApiError, AutogradError) as e:  # pointers into the request: the file's names
        err = to_api_error(e)
        for item in err.errors:
            head, _, rest = item["pointer"].lstrip("/").partition("/")
            if head == "inputs" and rest.split("/")[0] in constants:
                item["pointer"] = "/constants/" + rest
        raise err from None
    outputs = {k: tuple(t["shape"]) for k, t in answer["outputs"].items()}
    return Model(model.name, model.description, model.dtype, model.inputs, outputs,
                 model.nodes, model.constants)


def _b64(a: np.ndarray) -> dict:
    name = codec.NAMES[a.dtype]
    raw = np.ascontiguousarray(a, codec.LITTLE[name])
    return {"shape": list(a.shape), "dtype": name, "b64": pybase64.b64encode(raw).decode()}


# ---- gradserve's routes ---------------------------------------------------------------------

def served() -> dict[str, Model]:
    return current_app.extensions["gradserve"].models


def find(name: str) -> Model:
    model = served().get(name)
    if model is None:
        raise ApiError(404, "unknown_model", f"no model {name!r}; GET /v1/models lists them")
    return model


def _json(obj) -> Response:
    return Response(codec.dumps(obj), mimetype="application/json")


def list_models():
    return _json({"models": [m.describe() for m in served().values()]})


def get_model(name: str):
    return _json(find(name).describe())


def evaluate_model(name: str):
    model = find(name)
    rt = current_app.extensions["gradserve"]
    return _json(model.evaluate(codec.loads(request.get_data(cache=False)), rt.settings,
                                rt.plans))


class ModelInputInfo(Strict):
    name: str
    shape: list[int]


class ModelInfo(Strict):
    name: str
    description: str
    dtype: Dtype
    inputs: list[ModelInputInfo]
    outputs: list[ModelInputInfo]


class ModelsList(Strict):
    models: list[ModelInfo]


def _model_evaluate_request() -> type:
    """The body of POST /v1/models/NAME/evaluate, for the document: /v1/evaluate's less
    `nodes` and `dtype`, whatever members /v1/evaluate has."""
    fields = {k: (f.annotation, f) for k, f in EvaluateRequest.model_fields.items()
              if k not in ("nodes", "dtype", "inputs")}
    fields["inputs"] = (dict[Id, TensorIn], Field(
        description="the model's inputs by name, each of its declared shape; all differentiable"))
    return create_model("ModelEvaluateRequest", __base__=Strict, **fields)


ModelEvaluateRequest = _model_evaluate_request()

NAME = {"parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": f"^{ID.pattern}$"},
                        "description": "the model's name (its file, less .json)"}]}

ROUTES = [
    Route("GET", "/v1/models", list_models, "The models this server holds", ModelsList,
          errors=(429,)),
    Route("GET", "/v1/models/<name>", get_model, "One model: its inputs and outputs", ModelInfo,
          errors=(404, 429), extra=NAME),
    Route("POST", "/v1/models/<name>/evaluate", evaluate_model,
          "Evaluate a model: /v1/evaluate with the model's nodes", EvaluateResponse,
          request=ModelEvaluateRequest, errors=(400, 404, 413, 415, 422, 429, 504), extra=NAME),
]
