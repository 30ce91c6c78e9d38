"""What a plan may cost, and what it will: limits, when each value is released, peak
bytes and FLOPs, all from shapes before one array exists."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import LimitExceeded
from .shapes import extent
from .tensor import Tensor


@dataclass(frozen=True)
class Limits:
    """What one evaluation may cost; None is no limit."""

    max_nodes: int | None = None
    max_elements: int | None = None      # of any one tensor
    max_total_bytes: int | None = None   # all tensors alive at once, at the peak
    max_flops: float | None = None

    def check_nodes(self, n: int) -> None:
        """LimitExceeded if n nodes are too many (the service asks before validating them)."""
        if self.max_nodes is not None and n > self.max_nodes:
            raise LimitExceeded(f"the graph has {n:,} nodes; the limit is {self.max_nodes:,}",
                                code="graph_too_large", path=("nodes",))


@dataclass(frozen=True)
class Cost:
    max_elements: int
    peak_bytes: int
    flops: float


def liveness(plan) -> list[list[Tensor]]:
    """Release each value after its last reader: forward, unless it is returned or a
    gradient rule reads it; backward, after the last rule that reads it."""
    keep = {plan.tensors[name] for name in plan.outputs}
    last_backward = {}  # tensor -> index (in backward order) of the last rule reading it
    for k, t in enumerate(reversed(plan.path)):
        saves = t.op.saves if t.op else ""
        if "x" in saves:
            for p in t.parents:
                if p.op is not None:
                    last_backward[p] = k
        if "y" in saves:
            last_backward[t] = k
    last_forward = {}
    for s in plan.steps:
        last_forward[s.tensor] = s
        for p in s.tensor.parents:
            if p.op is not None:
                last_forward[p] = s
    for t, s in last_forward.items():
        if t not in keep and t not in last_backward:
            s.frees.append(t)
    frees = [[] for _ in plan.path]
    for t, k in last_backward.items():
        if t not in keep:
            frees[k].append(t)
    return frees

def cost(plan, limits: Limits) -> Cost:
    """Walk the plan's own release schedule in bytes: the peak it reaches, and FLOPs.
    Batched cotangents (k of them) multiply the backward pass's gradients."""
    item, prod = plan.dtype.itemsize, math.prod
    nbytes = {t: prod(t.shape) * item for t in plan.tensors.values()}
    largest = max(nbytes.values(), default=0) // item
    live = peak = sum(nbytes[plan.tensors[name]] for name in plan.inputs)
    flops = 0.0
    for s in plan.steps:
        t = s.tensor
        flops += flops_of(t)
        live += nbytes[t]
        if live + nbytes[t] > peak:  # and one temporary of the output's size
            peak = live + nbytes[t]
        for dead in s.frees:
            live -= nbytes[dead]
    if plan.of is not None:
        k = prod(plan.batch) if plan.batch else 1
        keep, has_grad = {plan.tensors[w] for w in plan.wrt}, {plan.tensors[plan.of]}
        live += k * nbytes[plan.tensors[plan.of]]
        frees = plan.backward_frees or [()] * len(plan.path)
        for t, dead_now in zip(reversed(plan.path), frees, strict=True):
            if t.op is not None:
                flops += 2 * k * flops_of(t)
                for p, need in zip(t.parents, t.needs, strict=True):
                    if need and p not in has_grad:
                        has_grad.add(p)
                        live += k * nbytes[p]
                temp = k * grad_temp(t)  # a rule's largest temporary, before reduction
                if limits.max_elements is not None and temp > limits.max_elements:
                    raise LimitExceeded(
                        f"the gradient of node {t.name!r} ({t.op.name}) passes through a "
                        f"temporary of {temp:,} elements; the limit is "
                        f"{limits.max_elements:,}", code="tensor_too_large", path=("grad",))
                peak = max(peak, live + temp * item)
            if t not in keep:
                live -= nbytes[t]
            for dead in dead_now:
                live -= nbytes[dead]
    return refuse(Cost(largest, peak, flops), limits)


def check_elements(shape, limits: Limits, path, what):
    n = extent(shape)
    if limits.max_elements is not None and n > limits.max_elements:
        raise LimitExceeded(f"{what} would have shape {tuple(shape)}, {n:,} elements; the limit "
                            f"is {limits.max_elements:,}", code="tensor_too_large", path=path)


def flops_of(t: Tensor) -> float:
    """An op's estimated floating-point operations; by default one per output element."""
    f = t.op.flops
    return math.prod(t.shape) if f is None else f([p.shape for p in t.parents], t.shape, t.attrs)


def grad_temp(t: Tensor) -> int:
    """Elements of the largest array a rule makes before the engine reduces it to a parent's
    shape: the output's, or for matmul a product over every broadcast batch dimension."""
    out = math.prod(t.shape)
    if t.op.name == "matmul":
        batch = t.shape[:-2]
        out = max([out] + [math.prod(batch + p.shape[-2:])
                           for p, need in zip(t.parents, t.needs, strict=True) if need])
    return out


def refuse(cost: Cost, limits: Limits) -> Cost:
    """The cost, or LimitExceeded when it passes the FLOP or byte limit."""
    if limits.max_flops is not None and cost.flops > limits.max_flops:
        raise LimitExceeded(f"the graph needs about {cost.flops:.3g} floating-point "
                            f"operations; the limit is {limits.max_flops:.3g}",
                            code="graph_too_large")
    if limits.max_total_bytes is not None and cost.peak_bytes > limits.max_total_bytes:
        raise LimitExceeded(f"the graph needs about {_mib(cost.peak_bytes)} of tensors at "
                            f"once; the limit is {_mib(limits.max_total_bytes)}",
                            code="graph_too_large")
    return cost


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def encoded_size(shape, dtype: np.dtype, encoding: str) -> int:
    """An upper bound on the JSON bytes of a returned tensor of this shape and dtype written in
    `encoding` (PROTOCOL.md §3): part of what a request costs, known before it runs. The
    service refuses responses by it and /v1/shapes reports it, remote and local alike."""
    n = math.prod(shape)
    head = 64 + sum(len(str(d)) + 1 for d in shape)  # the members, and the shape's digits
    if encoding == "base64":
        return 4 * math.ceil(n * dtype.itemsize / 3) + head
    per = 16 if dtype.itemsize == 4 else 25  # longest shortest-repr, and a comma
    lists = sum(math.prod(shape[:k]) for k in range(len(shape))) if encoding == "nested" else 1
    return n * per + 3 * lists + head  # brackets, and a comma after each inner list
