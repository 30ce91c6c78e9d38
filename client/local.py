"""The local backend: the same JSON, run by the engine (autograd/) in this process.

    with Client.local() as c:          # no server, no network
        r = c.evaluate(loss, grad_of=loss)

It takes the very body a Client would send, decodes its tensors and hands it
to `autograd.evaluate` (or, for POST /v1/shapes, to `autograd.plan`, which
allocates nothing); an engine error raises the GradserveError subclass,
`code` and status the server would answer with. So code written against a
server runs offline unchanged, and local and remote results can be compared.
"""

from __future__ import annotations

import binascii
import json
import time
from pathlib import Path

import numpy as np

from autograd import DTYPES, OPS, AutogradError, Leaf, Limits, Plan, evaluate, plan
from autograd.cost import encoded_size
from autograd.expr import expand
from autograd.shapes import extent

from . import codec
from .errors import ValidationError, error_class, from_engine, pointer, problem
from .result import DERIVATIVES, Result
from .session import VERSION, BaseClient

# The request's derivative members (PROTOCOL.md §8), in the order of the response's.
MEMBERS = ("grad", "jvp", "hvp", "jacobian")


class LocalClient(BaseClient):
    """Evaluates in-process. `limits` (autograd.Limits) and `deadline_s` are off by default."""

    url = "local:"

    def __init__(self, *, limits: Limits | None = None, deadline_s: float | None = None,
                 models_dir: str | Path | None = None):
        self.limits, self.deadline_s = limits, deadline_s
        self._models = _load_models(Path(models_dir)) if models_dir else {}

    def __repr__(self) -> str:
        return "Client.local()"

    def request(self, method: str, path: str, *, json=None, **kwargs) -> dict:
        """The server's GET /v1, GET /v1/ops, POST /v1/evaluate and /v1/shapes, answered here."""
        route = (method.upper(), path)
        if route == ("POST", "/v1/evaluate"):
            return self.evaluate_json(json).body
        if route == ("POST", "/v1/shapes"):
            return self._shapes(json)
        if route == ("GET", "/v1"):
            return {"name": "gradserve", "version": VERSION, "dtypes": list(DTYPES),
                    "encodings": ["nested", "flat", "base64"], "limits": {}}
        if route == ("GET", "/v1/ops"):
            return {"ops": [op.describe() for op in OPS.values()]}
        if route == ("GET", "/v1/models"):
            return {"models": [m.info for m in self._models.values()]}
        parts = path.split("/")  # "", "v1", "models", NAME[, "evaluate"]
        if parts[:3] == ["", "v1", "models"] and len(parts) in (4, 5):
            model = self._models.get(parts[3])
            if model is None:
                raise error_class(404)(problem(404, "unknown_model", f"no model {parts[3]!r}"))
            if method.upper() == "GET" and len(parts) == 4:
                return model.info
            if method.upper() == "POST" and parts[4:] == ["evaluate"]:
                return self.evaluate_json(model.request(json)).body
        raise error_class(404)(problem(404, "not_found", f"no local endpoint {method} {path}"))

    def evaluate_json(self, body: dict) -> Result:
        dtype = _dtype(body)
        inputs = body.get("inputs", {})

        def tensor(t, where):
            return _decode(t, dtype, where)

        try:
            arrays = {name: tensor(t, ("inputs", name)) for name, t in inputs.items()}
            specs = _specs(body, tensor)
            deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
            r = evaluate(body.get("nodes", []), arrays, requires_grad=_trained(inputs),
                         outputs=body.get("outputs"), **specs, vmap=_vmap(body), dtype=dtype,
                         limits=self.limits, deadline=deadline,
                         anomaly=bool(body.get("anomaly", False)))
        except AutogradError as e:
            raise from_engine(e) from None
        asked = {m: getattr(r, m) for m, spec in zip(DERIVATIVES, MEMBERS[1:], strict=True)
                 if body.get(spec)}
        return Result(r.outputs, r.gradients, r.warnings, r.stats, **asked, dtype=dtype,
                      encoding=body.get("encoding", "nested"))

    def _shapes(self, body: dict) -> dict:
        """POST /v1/shapes: the shapes and cost of what evaluate would return, from a plan."""
        dtype = _dtype(body)
        inputs = body.get("inputs", {})

        def shape(t, where):
            if "data" in t or "b64" in t:
                return _decode(t, dtype, where).shape
            return self._shape(t, where)

        try:
            trained = _trained(inputs)
            leaves = {name: Leaf(shape(t, ("inputs", name)), name in trained)
                      for name, t in inputs.items()}
            specs = _specs(body, shape)
            grad = specs.pop("grad")
            seed_shape = grad.pop("seed", None) if grad else None
            p = plan(body.get("nodes", []), leaves, outputs=body.get("outputs"), grad=grad,
                     seed_shape=seed_shape, **specs, vmap=_vmap(body), dtype=dtype,
                     limits=self.limits)
        except AutogradError as e:
            raise from_engine(e) from None
        return _shapes_body(p, body, dtype)

    def _shape(self, t: dict, where: tuple) -> tuple:
        """A tensor given by its shape alone, within the element limit as the server has it."""
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _refused(422, "validation_error", where,
                           "a tensor needs `data`, `b64`, or a `shape` of non-negative ints")
        limit = self.limits and self.limits.max_elements
        if limit is not None and extent(shape) > limit:
            raise _refused(413, "tensor_too_large", (*where, "shape"),
                           f"{extent(shape):,} elements; the limit is {limit:,} per tensor")
        return tuple(shape)


def _shapes_body(p, body: dict, dtype: str) -> dict:
    """PROTOCOL.md §9's answer for a plan of the request `body`, as the server writes it."""
    def described(shapes):
        return {k: {"shape": list(s), "dtype": dtype} for k, s in shapes.items()}

    ret = p.returned()
    sizes = [s for member in ret.values() for v in member.values()
             for s in (v.values() if isinstance(v, dict) else [v])]
    encoding = body.get("encoding", "nested")
    return {
        "nodes": {n["id"]: {"op": n["op"], "shape": list(p.shape_of(n["id"])),
                            "dtype": dtype} for n in body.get("nodes", [])},
        **{member: described(ret[member]) for member in ("outputs", "gradients", "jvp", "hvp")},
        "jacobians": {y: described(row) for y, row in ret["jacobians"].items()},
        "cost": {"flops": p.cost.flops, "peak_bytes": p.cost.peak_bytes,
                 "response_bytes": sum(encoded_size(s, np.dtype(dtype), encoding)
                                       for s in sizes)},
    }


def _specs(body: dict, tensor) -> dict:
    """grad, jvp, hvp and jacobian as autograd.evaluate takes them, tensors made by
    `tensor(wire_tensor, path)`: arrays, or shapes for a plan."""
    out = {}
    for member in MEMBERS:
        spec = body.get(member)
        if spec:
            spec = dict(spec)
            if member in ("jvp", "hvp") and "tangents" not in spec:  # the server's schema
                raise _refused(422, "validation_error", (member, "tangents"), "Field required")
            if spec.get("seed") is not None:
                spec["seed"] = tensor(spec["seed"], (member, "seed"))
            if "tangents" in spec:
                spec["tangents"] = {k: tensor(t, (member, "tangents", k))
                                    for k, t in spec["tangents"].items()}
        out[member] = spec or None
    return out


def _vmap(body: dict) -> list[str] | None:
    """The inputs that carry a leading batch axis (PROTOCOL.md §11), if any."""
    return (body.get("vmap") or {}).get("inputs")


def _trained(inputs: dict) -> set[str]:
    return {k for k, t in inputs.items() if t.get("requires_grad")}


def _dtype(body: dict) -> str:
    dtype = body.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValidationError(problem(422, "validation_error",
                                      f"dtype must be one of {list(DTYPES)}"))
    return dtype


class _LocalModel:
    """A model file, as the server would serve it (PROTOCOL.md §10)."""

    def __init__(self, name: str, doc: dict):
        self.doc, self.dtype = doc, doc.get("dtype", "float64")
        shapes = {k: tuple(i["shape"]) for k, i in doc["inputs"].items()}
        leaves = {k: Leaf(s, True) for k, s in shapes.items()}
        for k, t in doc.get("constants", {}).items():
            leaves[k] = Leaf(_decode(t, self.dtype, ("constants", k)).shape)
        try:
            self.nodes = list(expand(doc.get("nodes", []), doc.get("expr"), leaves))
            plan = Plan(self.nodes, leaves, outputs=doc.get("outputs"), dtype=self.dtype)
        except AutogradError as e:
            raise from_engine(e) from None
        self.outputs = plan.outputs
        self.info = {"name": name, "description": doc.get("description", ""),
                     "dtype": self.dtype,
                     "inputs": [{"name": k, "shape": list(s)} for k, s in shapes.items()],
                     "outputs": [{"name": k, "shape": list(plan.shapes[k])}
                                 for k in plan.outputs]}

    def request(self, body: dict) -> dict:
        """The /v1/evaluate body this model evaluate stands for."""
        sent = body.get("inputs", {})
        unknown = set(sent) - set(self.doc["inputs"])
        missing = set(self.doc["inputs"]) - set(sent)
        if unknown or missing:
            raise ValidationError(problem(422, "unknown_id" if unknown else "validation_error",
                                          f"the model's inputs are {list(self.doc['inputs'])}"))
        inputs = {**self.doc.get("constants", {}),
                  **{k: {**t, "requires_grad": True} for k, t in sent.items()}}
        return {"outputs": self.outputs, **body, "inputs": inputs, "nodes": self.nodes,
                "dtype": self.dtype}


def _load_models(folder: Path) -> dict[str, _LocalModel]:
    return {f.stem: _LocalModel(f.stem, json.loads(f.read_text()))
            for f in sorted(folder.glob("*.json"))}


def _decode(t: dict, dtype: str, where: tuple):
    try:
        return codec.decode(t, dtype)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise _refused(422, "bad_tensor", where, str(e)) from None


def _refused(status: int, code: str, where: tuple, detail: str):
    """The error the server answers for a tensor at `where`."""
    at = pointer(where)
    return error_class(status)(problem(status, code, f"{at}: {detail}",
                                       [{"pointer": at, "detail": detail}]))
