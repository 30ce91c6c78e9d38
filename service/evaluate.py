"""POST /v1/evaluate and POST /v1/shapes: decode, plan (refusing by shape), run, encode.

Everything that can be refused from shapes alone is refused before the
first array of the computation exists: tensor sizes, nodes, peak bytes,
FLOPs, every extra derivative pass (PROTOCOL.md §8), and the size of the
response. /v1/shapes stops there and says what evaluate would return.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import orjson
from pydantic import ValidationError

from autograd import AutogradError, Leaf, Limits, Plan, nonfinite, plan
from autograd.cost import encoded_size
from autograd.expr import expand

from . import codec
from .config import Settings
from .errors import ApiError, from_validation, pointer
from .plans import PlanCache
from .schemas import EvaluateRequest


def limits(settings: Settings) -> Limits:
    return Limits(max_nodes=settings.max_nodes, max_elements=settings.max_elements,
                  max_total_bytes=settings.max_total_bytes, max_flops=settings.max_flops)


# The lists of a request body, by pointer, that no model is made of past their limit (the
# nodes are counted by the app, against max_nodes).
COUNTED = [("inputs",), ("outputs",), ("grad", "wrt"), ("jvp", "of"), ("jvp", "tangents"),
           ("hvp", "wrt"), ("hvp", "tangents"), ("jacobian", "of"), ("jacobian", "wrt"),
           ("vmap", "inputs")]


def validate(doc: dict, settings: Settings, model=EvaluateRequest, context=None):
    """The request model of a parsed body, its lists counted first: pydantic allocates per
    item in native code, where the worker's memory cap would end the process. At most
    max_errors validation errors are reported."""
    for path in COUNTED:
        value = doc
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list | dict) and len(value) > settings.max_items:
            detail = f"{len(value):,} items; the limit is {settings.max_items:,} (max_items)"
            raise ApiError(413, "graph_too_large", f"{pointer(path)}: {detail}",
                           [{"pointer": pointer(path), "detail": detail}])
    try:
        return model.model_validate(doc, context=context)
    except ValidationError as e:
        first = _first_errors(doc, e, settings.max_errors, model, context)
        raise from_validation(first, settings.max_errors, e.error_count()) from None


def _first_errors(doc: dict, e: ValidationError, limit: int, model, context) -> ValidationError:
    """The same first errors, from a short prefix of `nodes` when there are many: turning
    600,000 errors into dicts takes 2 s, and each node is validated on its own, so the body
    with its first k nodes has the same first errors."""
    nodes = doc.get("nodes")
    k = limit
    while e.error_count() > limit and isinstance(nodes, list) and k < len(nodes):
        try:
            model.model_validate({**doc, "nodes": nodes[:k]}, context=context)
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


class Tensors:
    """Every tensor of a request read one way (`read(tensor, where)`: an array to compute
    with, or only a shape for /v1/shapes), the nodes with `expr` expanded (PROTOCOL.md §12),
    and the Plan's arguments made of their shapes."""

    def __init__(self, req: EvaluateRequest, read: Callable, max_nodes: int | None = None):
        self.req = req
        self.nodes = expand(req.nodes, req.expr, req.inputs, max_nodes=max_nodes)
        self.inputs = {name: read(t, ("inputs", name)) for name, t in req.inputs.items()}
        g, j, h = req.grad, req.jvp, req.hvp
        self.seed = None if g is None or g.seed is None else read(g.seed, ("grad", "seed"))
        self.tangents = None if j is None else {
            n: read(t, ("jvp", "tangents", n)) for n, t in j.tangents.items()}
        self.hvp = None if h is None else {
            "seed": None if h.seed is None else read(h.seed, ("hvp", "seed")),
            "tangents": {n: read(t, ("hvp", "tangents", n)) for n, t in h.tangents.items()}}

    @functools.cached_property
    def plan_args(self) -> dict:
        """Plan's keyword arguments: ids, flags and shapes, never values (once: the cache key
        and a plan built on a miss both read them)."""
        req, shape = self.req, np.shape
        args = {"outputs": req.outputs, "dtype": req.dtype}
        if req.grad is not None:
            args["grad"] = {"of": req.grad.of, "wrt": req.grad.wrt, "batch": req.grad.batch}
            args["seed_shape"] = None if self.seed is None else shape(self.seed)
        if req.jvp is not None:
            args["jvp"] = {"of": req.jvp.of, "batch": req.jvp.batch,
                           "tangents": {n: shape(t) for n, t in self.tangents.items()}}
        if req.hvp is not None:
            seed = self.hvp["seed"]
            args["hvp"] = {"of": req.hvp.of, "wrt": req.hvp.wrt, "batch": req.hvp.batch,
                           "seed": None if seed is None else shape(seed),
                           "tangents": {n: shape(t) for n, t in self.hvp["tangents"].items()}}
        if req.jacobian is not None:
            args["jacobian"] = {"of": req.jacobian.of, "wrt": req.jacobian.wrt}
        if req.vmap is not None:
            args["vmap"] = req.vmap.inputs
        return args

    @functools.cached_property
    def leaves(self) -> dict[str, Leaf]:
        return {name: Leaf(np.shape(a), self.req.inputs[name].requires_grad)
                for name, a in self.inputs.items()}

    def plan(self, settings: Settings) -> Plan:
        try:
            return plan(self.nodes, self.leaves, limits=limits(settings), **self.plan_args)
        except AutogradError as e:  # a fault in an expanded node is the expression's
            raise self.nodes.locate(e) from None


def evaluate(req: EvaluateRequest, settings: Settings, plans: PlanCache,
             deadline: float | None = None) -> dict:
    """The response body for a validated request; `plans` holds the worker's plans. The
    deadline, when given, was set when the request arrived."""
    if deadline is None:
        deadline = time.monotonic() + settings.deadline_s
    dtype = np.dtype(req.dtype)

    def read(t, where):
        return codec.decode(t, dtype, where, settings.max_elements)

    tensors = Tensors(req, read, settings.max_nodes)
    # everything a plan depends on; the nodes as their JSON (2 and 2.0 differ there too)
    nodes = orjson.dumps(tensors.nodes)  # nesting is bounded in schemas.py, under orjson's 254
    key = (nodes, tuple(tensors.leaves.items()), _frozen(tensors.plan_args))
    planned = plans.get(key, lambda: tensors.plan(settings), len(nodes))
    _check_deadline(deadline)
    _check_response_size(planned, dtype, req.encoding, settings.max_response_bytes)
    result = planned.run(tensors.inputs, tensors.seed, tangents=tensors.tangents,
                         hvp=tensors.hvp, deadline=deadline, anomaly=req.anomaly)

    def encode(arrays):
        return {k: codec.encode(v, req.encoding) for k, v in arrays.items()}

    body = {"outputs": encode(result.outputs), "gradients": encode(result.gradients)}
    if req.jvp is not None:
        body["jvp"] = encode(result.jvp)
    if req.hvp is not None:
        body["hvp"] = encode(result.hvp)
    if req.jacobian is not None:
        body["jacobians"] = {y: encode(row) for y, row in result.jacobians.items()}
    body["warnings"] = result.warnings + nonfinite(result)
    body["stats"] = result.stats
    if req.expr:
        body["expanded"] = tensors.nodes.generated
    return body


def shapes(req: EvaluateRequest, settings: Settings) -> dict:
    """PROTOCOL.md §9: what evaluate would return and cost, from shapes alone."""
    dtype = np.dtype(req.dtype)

    def read(t, where):
        if t.data is None and t.b64 is None:  # a shape alone: checked, nothing allocated
            codec.check_size(t.shape, where, settings.max_elements)
            return _Shape(tuple(t.shape))
        return codec.decode(t, dtype, where, settings.max_elements)

    tensors = Tensors(req, read, settings.max_nodes)
    planned = tensors.plan(settings)
    response = _check_response_size(planned, dtype, req.encoding, settings.max_response_bytes)

    def described(shapes_):
        return {k: {"shape": list(s), "dtype": req.dtype} for k, s in shapes_.items()}

    ret = planned.returned()
    expanded = {"expanded": tensors.nodes.generated} if req.expr else {}
    return {
        "nodes": {n["id"]: {"op": n["op"], "shape": list(planned.shape_of(n["id"])),
                            "dtype": req.dtype} for n in tensors.nodes},
        **{member: described(ret[member]) for member in ("outputs", "gradients", "jvp", "hvp")},
        "jacobians": {y: described(row) for y, row in ret["jacobians"].items()},
        "cost": {"flops": planned.cost.flops, "peak_bytes": planned.cost.peak_bytes,
                 "response_bytes": response},
        **expanded,
    }


class _Shape:
    """A tensor given by its shape alone: np.shape() of it is the shape."""

    def __init__(self, shape: tuple):
        self.shape = shape


def _frozen(v):
    """A hashable copy of nested dicts and lists."""
    if isinstance(v, dict):
        return tuple((k, _frozen(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    return v


def _check_response_size(plan: Plan, dtype: np.dtype, encoding: str, limit: int) -> int:
    """The response's size at most, from the shapes of everything it returns; 413 past the
    limit."""
    shapes_ = []
    for member in plan.returned().values():
        for s in member.values():
            shapes_ += s.values() if isinstance(s, dict) else [s]
    need = sum(encoded_size(shape, dtype, encoding) for shape in shapes_)
    if need > limit:
        hint = "" if encoding == "base64" else '; "encoding": "base64" is about 4x smaller'
        raise ApiError(413, "response_too_large",
                       f"the response would take up to {need:,} bytes; the limit is {limit:,}"
                       f"{hint}")
    return need
