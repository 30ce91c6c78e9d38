"""POST /v1/evaluate: decode, plan (refusing by shape), run, encode.

Everything that can be refused from shapes alone is refused before the
first array of the computation exists: tensor sizes, nodes, peak bytes,
FLOPs, and the size of the response.
"""

from __future__ import annotations

import time

import numpy as np
import orjson
from pydantic import ValidationError

from autograd import Leaf, Limits, Plan, nonfinite

from . import codec
from .config import Settings
from .errors import ApiError, from_validation, pointer
from .plans import PlanCache
from .schemas import EvaluateRequest


def limits(settings: Settings) -> Limits:
    return Limits(max_nodes=settings.max_nodes, max_elements=settings.max_elements,
                  max_total_bytes=settings.max_total_bytes, max_flops=settings.max_flops)


# The lists of a request body, by pointer, that no model is made of past their limit.
COUNTED = {("inputs",): "max_items", ("outputs",): "max_items", ("grad", "wrt"): "max_items"}


def validate(doc: dict, settings: Settings) -> EvaluateRequest:
    """The request model of a parsed body, its lists counted first: pydantic allocates per
    item in native code, where the worker's memory cap would end the process. At most
    max_errors validation errors are reported."""
    if isinstance(doc.get("nodes"), list):
        limits(settings).check_nodes(len(doc["nodes"]))
    for path, name in COUNTED.items():
        value = doc
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        limit = getattr(settings, name)
        if isinstance(value, list | dict) and len(value) > limit:
            detail = f"{len(value):,} items; the limit is {limit:,} ({name})"
            raise ApiError(413, "graph_too_large", f"{pointer(path)}: {detail}",
                           [{"pointer": pointer(path), "detail": detail}])
    try:
        req = EvaluateRequest.model_validate(doc)
    except ValidationError as e:
        raise from_validation(_first_errors(doc, e, settings.max_errors),
                              settings.max_errors, e.error_count()) from None
    return req


def _first_errors(doc: dict, e: ValidationError, limit: int) -> ValidationError:
    """The same first errors, from a short prefix of `nodes` when there are many: turning
    600,000 errors into dicts takes 2 s, and each node is validated on its own, so the body
    with its first k nodes has the same first errors."""
    nodes = doc.get("nodes")
    k = limit
    while e.error_count() > limit and isinstance(nodes, list) and k < len(nodes):
        try:
            EvaluateRequest.model_validate({**doc, "nodes": nodes[:k]})
        except ValidationError as shorter:
            if shorter.error_count() >= limit:
                return shorter
        k *= 4
    return e


def _check_deadline(deadline: float) -> None:
    """Reading, validating, decoding and planning count: a refusal by size comes first."""
    if time.monotonic() > deadline:
        raise ApiError(504, "deadline_exceeded", "the deadline passed before the evaluation "
                       "started (reading, validating and planning the request)")


def evaluate(req: EvaluateRequest, settings: Settings, plans: PlanCache,
             deadline: float | None = None) -> dict:
    """The response body for a validated request; `plans` holds the worker's plans. The
    deadline, when given, was set when the request arrived."""
    if deadline is None:
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
    # everything a plan depends on; the nodes as their JSON (2 and 2.0 differ there too)
    nodes = orjson.dumps(req.nodes)  # nesting is bounded in schemas.py, under orjson's 254
    key = (nodes, tuple(leaves.items()), _frozen(req.outputs),
           _frozen(grad and grad["of"]), _frozen(grad and grad["wrt"]), seed_shape, req.dtype)
    plan = plans.get(key, lambda: Plan(req.nodes, leaves, outputs=req.outputs, grad=grad,
                                       seed_shape=seed_shape, dtype=dtype,
                                       limits=limits(settings)), len(nodes))
    _check_deadline(deadline)
    _check_response_size(plan, dtype, req.encoding, settings.max_response_bytes)
    result = plan.run(arrays, seed, deadline=deadline, anomaly=req.anomaly)
    return {
        "outputs": {k: codec.encode(v, req.encoding) for k, v in result.outputs.items()},
        "gradients": {k: codec.encode(v, req.encoding) for k, v in result.gradients.items()},
        "warnings": result.warnings + nonfinite(result),
        "stats": result.stats,
    }


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
