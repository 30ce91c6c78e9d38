"""The local backend: the same JSON, run by the engine (autograd/) in this process.

    with Client.local() as c:          # no server, no network
        r = c.evaluate(loss, grad_of=loss)

It takes the very body a Client would send, decodes its tensors and hands it
to `autograd.evaluate`; an engine error raises the GradserveError subclass,
`code` and status the server would answer with. So code written against a
server runs offline unchanged, and local and remote results can be compared.
"""

from __future__ import annotations

import binascii
import json
import time
from pathlib import Path

from autograd import DTYPES, OPS, AutogradError, Leaf, Limits, Plan, evaluate
from autograd.expr import expand

from . import codec
from .errors import ValidationError, error_class, from_engine, pointer, problem
from .result import Result
from .session import VERSION, BaseClient


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
        """The server's GET /v1, GET /v1/ops and POST /v1/evaluate, answered here."""
        route = (method.upper(), path)
        if route == ("POST", "/v1/evaluate"):
            return self.evaluate_json(json).body
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
        dtype = body.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ValidationError(problem(422, "validation_error",
                                          f"dtype must be one of {list(DTYPES)}"))
        inputs = body.get("inputs", {})
        grad = body.get("grad")
        try:
            arrays = {name: _decode(t, dtype, ("inputs", name)) for name, t in inputs.items()}
            if grad:
                seed = grad.get("seed")
                grad = {"of": grad.get("of"), "wrt": grad.get("wrt"),
                        "seed": None if seed is None else _decode(seed, dtype, ("grad", "seed"))}
            deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
            r = evaluate(body.get("nodes", []), arrays,
                         requires_grad={k for k, t in inputs.items() if t.get("requires_grad")},
                         outputs=body.get("outputs"), grad=grad, dtype=dtype,
                         limits=self.limits, deadline=deadline,
                         anomaly=bool(body.get("anomaly", False)))
        except AutogradError as e:
            raise from_engine(e) from None
        return Result(r.outputs, r.gradients, r.warnings, r.stats, dtype=dtype,
                      encoding=body.get("encoding", "nested"))


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
        at = pointer(where)
        raise ValidationError(problem(422, "bad_tensor", f"{at}: {e}",
                                      [{"pointer": at, "detail": str(e)}])) from None
