"""POST /v1/evaluate: decode, plan (refusing by shape), run, encode.

Everything that can be refused from shapes alone is refused before the
first array of the computation exists: tensor sizes, nodes, peak bytes,
FLOPs, and the size of the response.
"""

from __future__ import annotations

import time

import numpy as np

from autograd import Leaf, Limits, Plan

from . import codec
from .config import Settings
from .errors import ApiError
from .schemas import EvaluateRequest


def limits(settings: Settings) -> Limits:
    return Limits(max_nodes=settings.max_nodes, max_elements=settings.max_elements,
                  max_total_bytes=settings.max_total_bytes, max_flops=settings.max_flops)


def evaluate(req: EvaluateRequest, settings: Settings) -> dict:
    """The response body for a validated request."""
    deadline = time.monotonic() + settings.deadline_s
    dtype = np.dtype(req.dtype)
    arrays = {name: codec.decode(t, dtype, ("inputs", name), settings.max_elements)
              for name, t in req.inputs.items()}
    seed = grad = None
    if req.grad is not None:
        grad = {"of": req.grad.of, "wrt": req.grad.wrt}
        if req.grad.seed is not None:
            seed = codec.decode(req.grad.seed, dtype, ("grad", "seed"), settings.max_elements)
    plan = Plan(req.nodes, {name: Leaf(a.shape, req.inputs[name].requires_grad)
                        for name, a in arrays.items()},
                outputs=req.outputs, grad=grad, seed_shape=None if seed is None else seed.shape,
                dtype=dtype, limits=limits(settings))
    _check_response_size(plan, dtype, req.encoding, settings.max_response_bytes)
    result = plan.run(arrays, seed, deadline=deadline, anomaly=req.anomaly)
    return {
        "outputs": {k: codec.encode(v, req.encoding) for k, v in result.outputs.items()},
        "gradients": {k: codec.encode(v, req.encoding) for k, v in result.gradients.items()},
        "warnings": result.warnings,
        "stats": result.stats,
    }


def _check_response_size(plan: Plan, dtype: np.dtype, encoding: str, limit: int) -> None:
    returned = [plan.shapes[name] for name in [*plan.outputs, *plan.wrt]]
    need = sum(codec.encoded_size(shape, dtype, encoding) for shape in returned)
    if need > limit:
        hint = "" if encoding == "base64" else '; "encoding": "base64" is about 4x smaller'
        raise ApiError(413, "response_too_large",
                       f"the response would take up to {need:,} bytes; the limit is {limit:,}"
                       f"{hint}")
