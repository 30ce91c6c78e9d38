"""POST /v1/evaluate and POST /v1/shapes: decode, plan (refusing by shape), run, encode.

Everything that can be refused from shapes alone is refused before the
first array of the computation exists: tensor sizes, nodes, peak bytes,
FLOPs, every extra derivative pass (PROTOCOL.md §8), and the size of the
response. /v1/shapes stops there and says what evaluate would return.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import orjson

from autograd import Leaf, Limits, Plan, nonfinite
from autograd.specs import returned

from . import codec
from .config import Settings
from .errors import ApiError
from .plans import PlanCache
from .schemas import EvaluateRequest


def limits(settings: Settings) -> Limits:
    return Limits(max_nodes=settings.max_nodes, max_elements=settings.max_elements,
                  max_total_bytes=settings.max_total_bytes, max_flops=settings.max_flops)


class Tensors:
    """Every tensor of a request read one way (`read(tensor, where)`: an array to compute
    with, or only a shape for /v1/shapes), and the Plan's arguments made of their shapes."""

    def __init__(self, req: EvaluateRequest, read: Callable):
        self.req = req
        self.inputs = {name: read(t, ("inputs", name)) for name, t in req.inputs.items()}
        g, j, h = req.grad, req.jvp, req.hvp
        self.seed = None if g is None or g.seed is None else read(g.seed, ("grad", "seed"))
        self.tangents = None if j is None else {
            n: read(t, ("jvp", "tangents", n)) for n, t in j.tangents.items()}
        self.hvp = None if h is None else {
            "seed": None if h.seed is None else read(h.seed, ("hvp", "seed")),
            "tangents": {n: read(t, ("hvp", "tangents", n)) for n, t in h.tangents.items()}}

    def plan_args(self) -> dict:
        """Plan's keyword arguments: ids, flags and shapes, never values."""
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
        return args

    def leaves(self) -> dict[str, Leaf]:
        return {name: Leaf(np.shape(a), self.req.inputs[name].requires_grad)
                for name, a in self.inputs.items()}

    def plan(self, settings: Settings) -> Plan:
        return Plan(self.req.nodes, self.leaves(), limits=limits(settings), **self.plan_args())


def evaluate(req: EvaluateRequest, settings: Settings, plans: PlanCache) -> dict:
    """The response body for a validated request; `plans` holds the worker's plans."""
    deadline = time.monotonic() + settings.deadline_s
    dtype = np.dtype(req.dtype)

    def read(t, where):
        return codec.decode(t, dtype, where, settings.max_elements)

    tensors = Tensors(req, read)
    # everything a plan depends on; the nodes as their JSON (2 and 2.0 differ there too)
    key = (orjson.dumps(req.nodes), tuple(tensors.leaves().items()),
           _frozen(tensors.plan_args()))
    plan = plans.get(key, lambda: tensors.plan(settings))
    _check_response_size(plan, dtype, req.encoding, settings.max_response_bytes)
    result = plan.run(tensors.inputs, tensors.seed, tangents=tensors.tangents, hvp=tensors.hvp,
                      deadline=deadline, anomaly=req.anomaly)

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
    return body


def shapes(req: EvaluateRequest, settings: Settings) -> dict:
    """PROTOCOL.md §9: what evaluate would return and cost, from shapes alone."""
    dtype = np.dtype(req.dtype)

    def read(t, where):
        if t.data is None and t.b64 is None:  # a shape alone: checked, nothing allocated
            codec.check_size(t.shape, where, settings.max_elements)
            return _Shape(tuple(t.shape))
        return codec.decode(t, dtype, where, settings.max_elements)

    plan = Tensors(req, read).plan(settings)
    response = _check_response_size(plan, dtype, req.encoding, settings.max_response_bytes)

    def described(shapes_):
        return {k: {"shape": list(s), "dtype": req.dtype} for k, s in shapes_.items()}

    ret = returned(plan)
    return {
        "nodes": {n["id"]: {"op": n["op"], "shape": list(plan.tensors[n["id"]].shape),
                            "dtype": req.dtype} for n in req.nodes},
        **{member: described(ret[member]) for member in ("outputs", "gradients", "jvp", "hvp")},
        "jacobians": {y: described(row) for y, row in ret["jacobians"].items()},
        "cost": {"flops": plan.cost.flops, "peak_bytes": plan.cost.peak_bytes,
                 "response_bytes": response},
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
    for member in returned(plan).values():
        for s in member.values():
            shapes_ += s.values() if isinstance(s, dict) else [s]
    need = sum(codec.encoded_size(shape, dtype, encoding) for shape in shapes_)
    if need > limit:
        hint = "" if encoding == "base64" else '; "encoding": "base64" is about 4x smaller'
        raise ApiError(413, "response_too_large",
                       f"the response would take up to {need:,} bytes; the limit is {limit:,}"
                       f"{hint}")
    return need
