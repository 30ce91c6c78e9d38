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
import time

from autograd import DTYPES, OPS, AutogradError, Limits, evaluate

from . import codec
from .errors import ValidationError, error_class, from_engine, pointer, problem
from .result import Result
from .session import VERSION, BaseClient


class LocalClient(BaseClient):
    """Evaluates in-process. `limits` (autograd.Limits) and `deadline_s` are off by default."""

    url = "local:"

    def __init__(self, *, limits: Limits | None = None, deadline_s: float | None = None):
        self.limits, self.deadline_s = limits, deadline_s

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


def _decode(t: dict, dtype: str, where: tuple):
    try:
        return codec.decode(t, dtype)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        at = pointer(where)
        raise ValidationError(problem(422, "bad_tensor", f"{at}: {e}",
                                      [{"pointer": at, "detail": str(e)}])) from None
