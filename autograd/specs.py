"""What a plan is asked for beyond one gradient (PROTOCOL.md §8), checked from shapes.

`grad.batch`, `jvp`, `hvp` and `jacobian` each name ids and give the shapes of
their tangents and seeds; here they are checked against the planned graph
(unknown ids, shapes, the batch size k), and their extra passes costed, before
anything is allocated. The paths are taken from the Plan once it has marked
which tensors want a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import AutogradError, LimitExceeded, SeedRequired, ShapeMismatch, UnknownId
from .shapes import Shape, extent, size


@dataclass
class Jvp:
    of: list[str]
    tangents: dict[str, Shape]     # input id -> tangent shape, batch axes included
    lead: tuple                    # the batch axes: () or (k,)


@dataclass
class Hvp:
    of: str
    wrt: list[str]
    tangents: dict[str, Shape]
    seeded: bool                   # a seed was given (else `of` has one element)
    lead: tuple
    path: list = field(default_factory=list)


@dataclass
class Jacobian:
    of: list[str]
    wrt: list[str]
    mode: str                      # "reverse": size(of) cotangents; "forward": size(wrt) tangents
    paths: dict = field(default_factory=dict)  # reverse: of id -> path


def lead(given, shape, path: tuple, what: str) -> tuple:
    """The batch axes (k,) of a batched tangent or seed of `what`'s `shape`."""
    given = tuple(given)
    if len(given) != len(shape) + 1 or given[1:] != tuple(shape):
        raise ShapeMismatch(f"a batch for {what} must have shape (k, *{tuple(shape)}), not "
                            f"{given}", path=path)
    return given[:1]


def _ids(names, known, path: tuple, what: str, allowed=None) -> list[str]:
    if not isinstance(names, (list, tuple)):
        raise AutogradError(f"{what} must be a list of ids", path=path)
    for k, name in enumerate(names):
        if not isinstance(name, str) or name not in known:
            raise UnknownId(f"{what} names {name!r}, which is not "
                            f"{'an input' if allowed is not None else 'an input or a node'}",
                            path=(*path, k))
    return list(names)


def _tangents(given: Mapping, plan, path: tuple, batch: bool, what: str):
    """Each tangent's id is an input and its shape the input's, or (k, *shape) batched."""
    shapes, leads = {}, set()
    for name, shape in given.items():
        at = (*path, name)
        if name not in plan.inputs:
            raise UnknownId(f"{what} names {name!r}, which is not an input", path=at)
        want = plan.tensors[name].shape
        if batch:
            leads.add(lead(shape, want, at, f"input {name!r}"))
        elif tuple(shape) != want:
            raise ShapeMismatch(f"the tangent of {name!r} has shape {tuple(shape)}; {name!r} has "
                                f"shape {want}", path=at)
        shapes[name] = tuple(shape)
    if len(leads) > 1:
        raise ShapeMismatch(f"the batched tangents disagree on k: {sorted(k for (k,) in leads)}",
                            path=path)
    if batch and not leads:
        raise ShapeMismatch("a batched request needs at least one tangent to give k", path=path)
    return shapes, (leads.pop() if leads else ())


def jvp(spec: Mapping | None, plan, known) -> Jvp | None:
    if not spec:
        return None
    of = spec.get("of")
    of = list(plan.outputs) if of is None else _ids(of, known, ("jvp", "of"), "jvp.of")
    tangents, lead_ = _tangents(spec.get("tangents") or {}, plan, ("jvp", "tangents"),
                                bool(spec.get("batch")), "jvp.tangents")
    return Jvp(of, tangents, lead_)


def hvp(spec: Mapping | None, plan, known) -> Hvp | None:
    if not spec:
        return None
    of = spec.get("of")
    if not isinstance(of, str) or of not in known:
        raise UnknownId(f"hvp.of names {of!r}, which is neither an input nor a node",
                        path=("hvp", "of"))
    wrt = spec.get("wrt")
    if wrt is None:
        wrt = [name for name, leaf in plan.inputs.items() if leaf.requires_grad]
    wrt = _ids(wrt, plan.inputs, ("hvp", "wrt"), "hvp.wrt", allowed="inputs")
    tangents, lead_ = _tangents(spec.get("tangents") or {}, plan, ("hvp", "tangents"),
                                bool(spec.get("batch")), "hvp.tangents")
    shape, seed = plan.tensors[of].shape, spec.get("seed")
    if seed is None and size(shape) != 1:
        raise SeedRequired(f"hvp.of {of!r} has shape {shape}: a seed of that shape is required "
                           f"when `of` is not a single element", path=("hvp",))
    if seed is not None and tuple(seed) != shape:
        raise ShapeMismatch(f"hvp.seed has shape {tuple(seed)} but {of!r} has shape {shape}",
                            path=("hvp", "seed"))
    return Hvp(of, wrt, tangents, seed is not None, lead_)


def jacobian(spec: Mapping | None, plan, known) -> Jacobian | None:
    if not spec:
        return None
    of = _ids(spec.get("of") or [], known, ("jacobian", "of"), "jacobian.of")
    wrt = spec.get("wrt")
    if wrt is None:
        wrt = [name for name, leaf in plan.inputs.items() if leaf.requires_grad]
    wrt = _ids(wrt, plan.inputs, ("jacobian", "wrt"), "jacobian.wrt", allowed="inputs")
    rows = sum(size(plan.tensors[y].shape) for y in of)
    cols = sum(size(plan.tensors[x].shape) for x in wrt)
    return Jacobian(of, wrt, "reverse" if rows <= cols else "forward")


def roots(plan) -> list[str]:
    """Ids the extra derivatives start from: their forward values must be computed."""
    out = []
    if plan.jvp:
        out += plan.jvp.of
    if plan.hvp:
        out.append(plan.hvp.of)
    if plan.jacobian:
        out += plan.jacobian.of
    return out


def reverse_targets(plan) -> list[str]:
    """Ids a reverse sweep of an extra derivative reaches back to."""
    out = []
    if plan.hvp:
        out += [*plan.hvp.wrt, *plan.hvp.tangents]
    if plan.jacobian and plan.jacobian.mode == "reverse":
        out += plan.jacobian.wrt
    return out


def returned(plan) -> dict[str, dict[str, Shape]]:
    """The shape of every tensor an evaluation returns, by response member."""
    shape = {name: t.shape for name, t in plan.tensors.items()}
    out = {"outputs": {o: shape[o] for o in plan.outputs},
           "gradients": {w: plan.batch + shape[w] for w in plan.wrt} if plan.of else {},
           "jvp": {}, "hvp": {}, "jacobians": {}}
    if plan.jvp:
        out["jvp"] = {y: plan.jvp.lead + shape[y] for y in plan.jvp.of}
    if plan.hvp:
        out["hvp"] = {i: plan.hvp.lead + shape[i] for i in plan.hvp.wrt}
    if plan.jacobian:
        out["jacobians"] = {y: {x: shape[y] + shape[x] for x in plan.jacobian.wrt}
                            for y in plan.jacobian.of}
    return out


def _k(lead_: tuple) -> int:
    return math.prod(lead_) if lead_ else 1


def cost(plan, limits):
    """The plan's cost with the extra passes: nothing is freed while they run (they read the
    forward values afterwards), each pass's tangents or gradients are counted k times, and
    every returned tensor must fit the element limit."""
    from .graph import Cost, flops_of, refuse

    item = plan.dtype.itemsize
    ret = returned(plan)
    for member, shapes in ret.items():
        for name, s in shapes.items():
            for sub, s2 in (s.items() if isinstance(s, dict) else [(None, s)]):
                if limits.max_elements is not None and extent(s2) > limits.max_elements:
                    where = f"{member}[{name!r}]" + (f"[{sub!r}]" if sub else "")
                    raise LimitExceeded(
                        f"{where} would have shape {tuple(s2)}, {extent(s2):,} elements; the "
                        f"limit is {limits.max_elements:,}", code="tensor_too_large",
                        path=(member if member != "jacobians" else "jacobian",))
    nbytes = {t: size(t.shape) * item for t in plan.tensors.values()}
    steps = [s.tensor for s in plan.steps]
    alive = sum(nbytes.values())  # every forward value, kept to the end
    peak, flops = alive + plan.cost.peak_bytes, plan.cost.flops

    def sweep(tensors, k, factor=2):
        return (k * sum(nbytes[t] for t in tensors),
                factor * k * sum(flops_of(t) for t in tensors if t.op is not None))

    if plan.jvp:
        reach = _downstream(plan, plan.jvp.tangents, steps)
        b, f = sweep(reach, _k(plan.jvp.lead))
        peak, flops = peak + b, flops + f
    if plan.hvp:
        # traced gradient (its nodes hold data) and its reverse sweep, k directions
        b, f = sweep(plan.hvp.path, 3 + 3 * _k(plan.hvp.lead), factor=4)
        peak, flops = peak + b, flops + f
    if plan.jacobian:
        j = plan.jacobian
        for y in j.of:
            for x in j.wrt:
                peak += size(plan.tensors[y].shape) * size(plan.tensors[x].shape) * item
        if j.mode == "reverse":
            for y in j.of:
                b, f = sweep(j.paths[y], size(plan.tensors[y].shape))
                peak, flops = peak + b, flops + f
        else:
            for x in j.wrt:
                b, f = sweep(_downstream(plan, [x], steps), size(plan.tensors[x].shape))
                peak, flops = peak + b, flops + f
    return refuse(Cost(plan.cost.max_elements, peak, flops), limits)


def _downstream(plan, names, steps) -> list:
    """The inputs named and every step that depends on one: what a forward sweep touches."""
    reach = {plan.tensors[n] for n in names}
    for t in steps:
        if not reach.isdisjoint(t.parents):
            reach.add(t)
    return list(reach)
