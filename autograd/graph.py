"""Plan and run a graph description: PROTOCOL.md §1 without the tensor encodings.

`plan` does everything that needs only shapes, before one array exists: ids,
ops, arity and attributes checked; nodes ordered iteratively (graphlib) with
a cycle named by its ids; every shape inferred; the backward path (nodes
between `of` and `wrt`) found; when each value can be released decided; and
the cost (largest tensor, peak bytes, FLOPs) checked against `Limits`.
`Plan.run` is then a tight loop: forward over the steps, backward over the
path, with the deadline checked between nodes.
"""

from __future__ import annotations

import graphlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import (
    ArityError,
    AutogradError,
    BadAttribute,
    CycleError,
    DeadlineExceeded,
    DuplicateId,
    LimitExceeded,
    SeedRequired,
    ShapeMismatch,
    UnknownId,
    UnknownOp,
)
from .registry import OPS, Op, is_number
from .shapes import Shape, extent, size
from .tensor import Tensor, as_dtype, backprop, constant, initial_grad

ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class Leaf:
    """An input as the planner sees it: its shape, and whether it is a PARAMETER."""

    shape: Shape
    requires_grad: bool = False


@dataclass(frozen=True)
class Limits:
    """What one evaluation may cost; None is no limit."""

    max_nodes: int | None = None
    max_elements: int | None = None      # of any one tensor
    max_total_bytes: int | None = None   # all tensors alive at once, at the peak
    max_flops: float | None = None


@dataclass(frozen=True)
class Cost:
    max_elements: int
    peak_bytes: int
    flops: float


@dataclass(slots=True)
class Step:
    id: str
    index: int                 # position in the request's `nodes`
    op: Op
    args: tuple[str, ...]      # ids; number literals became constants named "#i.j"
    attrs: dict
    needs: tuple[bool, ...] = ()   # which args want a gradient; () off the backward path
    frees: list[str] = field(default_factory=list)  # values this step was the last to read


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    warnings: list[dict]
    stats: dict


def _check_id(name, path: tuple) -> None:
    if not isinstance(name, str) or not ID.fullmatch(name):
        raise AutogradError(f"id {name!r} must match {ID.pattern}", path=path)


def _known(name, known, path: tuple, what: str) -> str:
    if not isinstance(name, str) or name not in known:
        raise UnknownId(f"{what} names {name!r}, which is neither an input nor a node", path=path)
    return name


class Plan:
    """A checked, ordered, costed graph, ready to run on arrays of the planned shapes."""

    def __init__(self, nodes: Sequence[Mapping], inputs: Mapping[str, Leaf], *, outputs=None,
                 grad: Mapping | None = None, seed_shape=None, dtype="float32",
                 limits: Limits | None = None):
        limits = limits or Limits()
        self.dtype = as_dtype(dtype)
        if limits.max_nodes is not None and len(nodes) > limits.max_nodes:
            raise LimitExceeded(f"the graph has {len(nodes):,} nodes; the limit is "
                                f"{limits.max_nodes:,}", code="graph_too_large", path=("nodes",))
        self.inputs = dict(inputs)
        for name, leaf in self.inputs.items():
            _check_id(name, ("inputs", name))
            _check_elements(leaf.shape, limits, ("inputs", name), f"input {name!r}")
        self.consts: dict[str, object] = {}
        steps, in_order = self._parse(nodes)
        by_id = {s.id: s for s in steps}
        known = self.inputs.keys() | by_id.keys() | self.consts.keys()
        if not in_order:
            for s in steps:
                for j, a in enumerate(s.args):
                    _known(a, known, ("nodes", s.index, "args", j), f"node {s.id!r} ({s.op.name})")
            steps = _order(steps, by_id)
        self.shapes = self._infer(steps, limits)

        if outputs is None:
            used = {a for s in steps for a in s.args}
            outputs = [s.id for s in sorted(steps, key=_index) if s.id not in used]
        self.outputs = [_known(o, known, ("outputs", k), "outputs")
                        for k, o in enumerate(outputs)]
        self.of, self.wrt = self._grad_spec(grad, seed_shape, known)

        needed = _ancestors(self.outputs + ([self.of] if self.of else []), by_id)
        self.steps = [s for s in steps if s.id in needed]
        self.path = self._backward_path(by_id)
        self.backward_frees = self._liveness()
        self.cost = self._cost(limits)

    # -- building --------------------------------------------------------------------------

    def _parse(self, nodes) -> tuple[list[Step], bool]:
        """Check each node on its own; say whether every arg was defined before its use."""
        steps, seen, in_order = [], set(self.inputs), True
        for i, node in enumerate(nodes):
            nid = node.get("id")
            _check_id(nid, ("nodes", i, "id"))
            if nid in seen:
                raise DuplicateId(f"id {nid!r} is used twice", path=("nodes", i, "id"), node=nid)
            name = node.get("op")
            op = OPS.get(name) if isinstance(name, str) else None
            if op is None:
                raise UnknownOp(f"node {nid!r}: unknown op {name!r}; GET /v1/ops lists them",
                                path=("nodes", i, "op"), node=nid)
            where = f"node {nid!r} ({op.name})"
            args = node.get("args", [])
            if not isinstance(args, (list, tuple)) or len(args) != op.arity:
                n = len(args) if isinstance(args, (list, tuple)) else "no list of"
                raise ArityError(f"{where}: takes {op.arity} argument(s), got {n}",
                                 path=("nodes", i, "args"), node=nid)
            ids, tensors = [], 0
            for j, a in enumerate(args):
                if isinstance(a, str):
                    ids.append(a)
                    tensors += 1
                    if a not in seen:
                        in_order = False
                elif is_number(a) and j in op.numbers:
                    cid = f"#{i}.{j}"
                    self.consts[cid] = a
                    ids.append(cid)
                else:
                    why = "a number" if is_number(a) else type(a).__name__
                    raise AutogradError(f"{where}: argument {j} must be an id"
                                        f"{' or a number' if j in op.numbers else ''}, not {why}",
                                        path=("nodes", i, "args", j), node=nid)
            if not tensors:
                raise AutogradError(f"{where}: needs at least one tensor argument",
                                    path=("nodes", i, "args"), node=nid)
            try:
                attrs = op.check_attrs(node.get("attrs"))
            except AutogradError as e:
                raise e.within("nodes", i, "attrs", node=nid, context=where) from None
            seen.add(nid)
            steps.append(Step(nid, i, op, tuple(ids), attrs))
        return steps, in_order

    def _infer(self, steps, limits) -> dict[str, Shape]:
        shapes = {name: tuple(leaf.shape) for name, leaf in self.inputs.items()}
        shapes.update(dict.fromkeys(self.consts, ()))
        max_elements = limits.max_elements
        for s in steps:
            in_shapes = [shapes[a] for a in s.args]
            try:
                if s.op.bind:
                    s.attrs.update(s.op.bind(*in_shapes, **s.attrs))
                out = s.op.shape(*in_shapes, **s.attrs)
            except AutogradError as e:
                part = "attrs" if isinstance(e, BadAttribute) else "args"
                raise e.within("nodes", s.index, part, node=s.id,
                               context=f"node {s.id!r} ({s.op.name})") from None
            if max_elements is not None and extent(out) > max_elements:
                _check_elements(out, limits, ("nodes", s.index), f"node {s.id!r} ({s.op.name})")
            shapes[s.id] = out
        return shapes

    def _grad_spec(self, grad, seed_shape, known):
        if not grad:
            return None, []
        of = _known(grad.get("of"), known, ("grad", "of"), "grad.of")
        wrt = grad.get("wrt")
        if wrt is None:
            wrt = [name for name, leaf in self.inputs.items() if leaf.requires_grad]
        wrt = [_known(w, known, ("grad", "wrt", k), "grad.wrt") for k, w in enumerate(wrt)]
        shape = self.shapes[of]
        if seed_shape is None and size(shape) != 1:
            raise SeedRequired(f"grad.of {of!r} has shape {shape}: a seed of that shape is "
                               f"required when `of` is not a single element", path=("grad",))
        if seed_shape is not None and tuple(seed_shape) != shape:
            raise ShapeMismatch(f"grad.seed has shape {tuple(seed_shape)} but {of!r} has shape "
                                f"{shape}", path=("grad", "seed"))
        return of, wrt

    def _backward_path(self, by_id) -> list[str]:
        """Values between `of` and `wrt`, in topological order; sets each step's `needs`."""
        if self.of is None:
            return []
        targets = set(self.wrt)
        reach = {name for name in self.inputs if name in targets}
        for s in self.steps:
            if s.id in targets or not reach.isdisjoint(s.args):
                reach.add(s.id)
        above = _ancestors([self.of], by_id)
        path = [name for name in self.inputs if name in reach and name in above]
        for s in self.steps:
            if s.id in reach and s.id in above:
                path.append(s.id)
                s.needs = tuple(a in reach for a in s.args)
        return path

    def _liveness(self) -> list[list[str]]:
        """Forward: release a value after its last reader unless returned or read by backward.
        Backward: release it after the last rule that reads it."""
        keep = set(self.outputs)
        steps = {s.id: s for s in self.steps}
        reads = []  # per backward step (reversed path): the values its rule reads
        for name in reversed(self.path):
            s = steps.get(name)
            r = set()
            if s is not None:
                if "x" in s.op.saves:
                    r.update(a for a in s.args if a in steps)
                if "y" in s.op.saves:
                    r.add(name)
            reads.append(r)
        backward_read = set().union(*reads) if reads else set()
        last = {}
        for k, s in enumerate(self.steps):
            last[s.id] = k
            for a in s.args:
                if a in steps:
                    last[a] = k
        for name, k in last.items():
            if name not in keep and name not in backward_read:
                self.steps[k].frees.append(name)
        frees, done = [[] for _ in reads], set(keep)
        for k in range(len(reads) - 1, -1, -1):
            for name in reads[k] - done:
                frees[k].append(name)
                done.add(name)
        return frees

    def _cost(self, limits: Limits) -> Cost:
        """Walk the plan's own release schedule in bytes: the peak it reaches, and FLOPs."""
        shapes, item = self.shapes, self.dtype.itemsize
        nbytes = {name: size(shape) * item for name, shape in shapes.items()}
        live = peak = sum(nbytes[name] for name in self.inputs)
        flops = 0.0
        for s in self.steps:
            live += nbytes[s.id]
            peak = max(peak, live + nbytes[s.id])  # and one temporary of the output's size
            flops += s.op.flops([shapes[a] for a in s.args], shapes[s.id], s.attrs)
            live -= sum(nbytes[name] for name in s.frees)
        if self.of is not None:
            steps = {s.id: s for s in self.steps}
            keep, has_grad = set(self.wrt), {self.of}
            live += nbytes[self.of]
            for k, name in enumerate(reversed(self.path)):
                s = steps.get(name)
                if s is not None:
                    flops += 2 * s.op.flops([shapes[a] for a in s.args], shapes[name], s.attrs)
                    for a, need in zip(s.args, s.needs, strict=True):
                        if need and a not in has_grad:
                            has_grad.add(a)
                            live += nbytes[a]
                    peak = max(peak, live + nbytes[name])
                if name not in keep:
                    live -= nbytes[name]
                live -= sum(nbytes[v] for v in self.backward_frees[k])
        cost = Cost(max((size(s) for s in shapes.values()), default=0), peak, flops)
        if limits.max_flops is not None and cost.flops > limits.max_flops:
            raise LimitExceeded(f"the graph needs about {cost.flops:.3g} floating-point "
                                f"operations; the limit is {limits.max_flops:.3g}",
                                code="graph_too_large")
        if limits.max_total_bytes is not None and cost.peak_bytes > limits.max_total_bytes:
            raise LimitExceeded(f"the graph needs about {_mib(cost.peak_bytes)} of tensors at "
                                f"once; the limit is {_mib(limits.max_total_bytes)}",
                                code="graph_too_large")
        return cost

    # -- running ---------------------------------------------------------------------------

    def run(self, arrays: Mapping[str, np.ndarray], seed=None, *, deadline: float | None = None,
            anomaly: bool = False) -> Result:
        """Forward, then backward if a gradient was planned. `deadline` is time.monotonic()."""
        dt = self.dtype
        values: dict[str, Tensor] = {}
        for name, leaf in self.inputs.items():
            t = Tensor(arrays[name], leaf.requires_grad, dtype=dt, name=name)
            if t.shape != tuple(leaf.shape):
                raise ValueError(f"input {name!r} has shape {t.shape}, planned {leaf.shape}")
            values[name] = t
        for cid, value in self.consts.items():
            values[cid] = constant(value, dt)
        watch = _Watch(anomaly)
        get, new, clock = values.__getitem__, Tensor._result, time.monotonic
        with np.errstate(all="ignore"):
            t0 = time.perf_counter()
            for s in self.steps:
                if deadline is not None and clock() > deadline:
                    raise DeadlineExceeded("the evaluation ran past its deadline and was stopped")
                parents = tuple(map(get, s.args))
                data = s.op.forward(*[p.data for p in parents], **s.attrs)
                values[s.id] = t = new(data, s.op, parents, s.attrs, s.needs, s.id)
                if anomaly:
                    watch.check(t, data, "forward")
                for name in s.frees:
                    values[name].data = None
            t1 = time.perf_counter()
            gradients = self._backward(values, seed, deadline, watch) if self.of else {}
            t2 = time.perf_counter()
        outputs = {name: np.asarray(values[name].data) for name in self.outputs}
        warnings = watch.found + _nonfinite(outputs, "outputs") + _nonfinite(gradients, "gradients")
        stats = {"nodes": len(self.steps), "forward_ms": round((t1 - t0) * 1e3, 3),
                 "backward_ms": round((t2 - t1) * 1e3, 3)}
        return Result(outputs, gradients, warnings, stats)

    def _backward(self, values, seed, deadline, watch) -> dict[str, np.ndarray]:
        of = values[self.of]
        seed = initial_grad(of.shape, self.dtype, seed, path=("grad", "seed"))
        path = [values[name] for name in self.path]
        frees = [[values[name] for name in names] for names in self.backward_frees]
        grads = backprop(path, of, seed, keep=[values[w] for w in self.wrt], frees=frees,
                         deadline=deadline, hook=watch.backward if watch.anomaly else None)
        out = {}
        for w in self.wrt:
            g = grads.get(values[w])
            zero = g is None
            out[w] = np.zeros(self.shapes[w], self.dtype) if zero else np.asarray(g, self.dtype)
        return out


def plan(nodes: Sequence[Mapping], inputs: Mapping[str, Leaf], **kw) -> Plan:
    """Check, order, infer and cost a graph without allocating; see Plan."""
    return Plan(nodes, inputs, **kw)


def evaluate(nodes: Sequence[Mapping], inputs: Mapping[str, np.ndarray], *, requires_grad=(),
             outputs=None, grad: Mapping | None = None, dtype="float32",
             limits: Limits | None = None, deadline: float | None = None,
             anomaly: bool = False) -> Result:
    """Plan and run in one call. `grad` is {"of", "wrt", "seed"} as in PROTOCOL.md §1."""
    seed = None if not grad else grad.get("seed")
    leaves = {name: Leaf(np.shape(a), name in requires_grad) for name, a in inputs.items()}
    p = Plan(nodes, leaves, outputs=outputs, grad=grad, dtype=dtype, limits=limits,
             seed_shape=None if seed is None else np.shape(seed))
    return p.run(inputs, seed, deadline=deadline, anomaly=anomaly)


# ---- helpers ----------------------------------------------------------------------------

class _Watch:
    """Anomaly detection: the first node of each phase whose value is not finite."""

    def __init__(self, anomaly: bool):
        self.anomaly, self.found, self._phases = anomaly, [], set()

    def check(self, t, data, phase):
        if phase in self._phases or np.isfinite(data).all():
            return
        self._phases.add(phase)
        kind = "nan" if np.isnan(data).any() else "inf"
        self.found.append({"id": t.name, "op": t.op.name, "phase": phase, "kind": kind})

    def backward(self, t, grads):
        for g in grads:
            if g is not None:
                self.check(t, g, "backward")


def _nonfinite(arrays: Mapping[str, np.ndarray], where: str) -> list[dict]:
    found = []
    for name, a in arrays.items():
        if a.size and not np.isfinite(a).all():
            nan = int(np.isnan(a).sum())
            inf = int(np.isinf(a).sum())
            found += [{"id": name, "in": where, "kind": kind, "count": n}
                      for kind, n in (("nan", nan), ("inf", inf)) if n]
    return found


def _check_elements(shape, limits: Limits, path, what):
    n = extent(shape)
    if limits.max_elements is not None and n > limits.max_elements:
        raise LimitExceeded(f"{what} would have shape {tuple(shape)}, {n:,} elements; the limit "
                            f"is {limits.max_elements:,}", code="tensor_too_large", path=path)


def _index(s: Step) -> int:
    return s.index


def _order(steps: list[Step], by_id: dict[str, Step]) -> list[Step]:
    """Topological order for nodes sent out of order; a cycle is named by its ids."""
    sorter = graphlib.TopologicalSorter({s.id: [a for a in s.args if a in by_id] for s in steps})
    try:
        return [by_id[nid] for nid in sorter.static_order()]
    except graphlib.CycleError as e:
        cycle = e.args[1][:-1]
        first = min(cycle, key=lambda nid: by_id[nid].index)
        ids = " -> ".join(cycle + [cycle[0]])
        raise CycleError(f"the nodes form a cycle: {ids}", ids=cycle,
                         path=("nodes", by_id[first].index)) from None


def _ancestors(roots, by_id: dict[str, Step]) -> set[str]:
    """Every id the roots depend on, roots included; iterative."""
    seen, stack = set(roots), list(roots)
    while stack:
        s = by_id.get(stack.pop())
        if s is not None:
            for a in s.args:
                if a not in seen:
                    seen.add(a)
                    stack.append(a)
    return seen


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
