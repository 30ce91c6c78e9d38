"""POST /v1/evaluate: decode, plan (refusing by shape), run, encode.

Everything that can be refused from shapes alone is refused before the
first array of the computation exists: tensor sizes, nodes, peak bytes,
FLOPs, and the size of the response.
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from autograd import AutogradError, Leaf, Limits, Plan, nonfinite
from autograd.expr import expand

from . import codec
from .config import Settings
from .errors import ApiError
from .plans import PlanCache
from .schemas import EvaluateRequest


def limits(settings: Settings) -> Limits:
    return Limits(max_nodes=settings.max_nodes, max_elements=settings.max_elements,
                  max_total_bytes=settings.max_total_bytes, max_flops=settings.max_flops)


def evaluate(req: EvaluateRequest, settings: Settings, plans: PlanCache) -> dict:
    """The response body for a validated request; `plans` holds the worker's plans."""
    deadline = time.monotonic() + settings.deadline_s
    dtype = np.dtype(req.dtype)
    arrays = {name: codec.decode(t, dtype, ("inputs", name), settings.max_elements)
              for name, t in req.inputs.items()}
    seed = grad = None
    if req.grad is not None:
        grad = {"of": req.grad.of, "wrt": req.grad.wrt}
        if req.grad.seed is not None:
            seed = codec.decode(req.grad.seed, dtype, ("grad", "seed"), settings.max_elements)
    leaves = {name: Leaf(a.shape, req.inputs[name].requires_grad) for name, a in arrays.items()}
    seed_shape = None if seed is None else seed.shape
    nodes = expand(req.nodes, req.expr, req.inputs, max_nodes=settings.max_nodes)
    # everything a plan depends on; the nodes as their JSON (2 and 2.0 differ there too)
    key = (orjson.dumps(nodes), tuple(leaves.items()), _frozen(req.outputs),
           _frozen(grad and grad["of"]), _frozen(grad and grad["wrt"]), seed_shape, req.dtype)
    try:
        plan = plans.get(key, lambda: Plan(nodes, leaves, outputs=req.outputs, grad=grad,
                                           seed_shape=seed_shape, dtype=dtype,
                                           limits=limits(settings)))
    except AutogradError as e:  # a fault in an expanded node is the expression's
        raise nodes.locate(e) from None
    _check_response_size(plan, dtype, req.encoding, settings.max_response_bytes)
    result = plan.run(arrays, seed, deadline=deadline, anomaly=req.anomaly)
    body = {
        "outputs": {k: codec.encode(v, req.encoding) for k, v in result.outputs.items()},
        "gradients": {k: codec.encode(v, req.encoding) for k, v in result.gradients.items()},
        "warnings": result.warnings + nonfinite(result),
        "stats": result.stats,
    }
    if req.expr:
        body["expanded"] = nodes.generated
    return body


def _frozen(v):
    return tuple(v) if isinstance(v, list) else v


def _check_response_size(plan: Plan, dtype: np.dtype, encoding: str, limit: int) -> None:
    returned = [plan.tensors[name].shape for name in [*plan.outputs, *plan.wrt]]
    need = sum(codec.encoded_size(shape, dtype, encoding) for shape in returned)
    if need > limit:
        hint = "" if encoding == "base64" else '; "encoding": "base64" is about 4x smaller'
        raise ApiError(413, "response_too_large",
                       f"the response would take up to {need:,} bytes; the limit is {limit:,}"
                       f"{hint}")
