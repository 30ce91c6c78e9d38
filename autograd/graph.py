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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import derivatives, specs
from .cost import Limits, check_elements, cost, liveness
from .errors import (
    ArityError,
    AutogradError,
    BadAttribute,
    CycleError,
    DeadlineExceeded,
    DuplicateId,
    SeedRequired,
    ShapeMismatch,
    UnknownId,
    UnknownOp,
)
from .registry import OPS, Op, is_number, suggest
from .shapes import Shape, extent, size
from .tensor import Tensor, as_dtype, backprop, constant, initial_grad

ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
MAX_RANK = 32  # of any tensor


@dataclass(frozen=True)
class Leaf:
    """An input as the planner sees it: its shape, and whether it is a PARAMETER."""

    shape: Shape
    requires_grad: bool = False


@dataclass(slots=True)
class Step:
    id: str
    index: int                 # position in the request's `nodes`
    op: Op
    args: tuple[str, ...]      # ids; number literals became constants named "#i.j"
    attrs: dict
    frees: list[Tensor] = field(default_factory=list)  # values this step was the last to read
    forward: Callable | None = None  # op.forward with attrs bound, once shapes are known
    tensor: Tensor | None = None     # the planned output, data filled in by each run


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    warnings: list[dict]  # from Plan.run: the plan's notes, anomalies (anomaly=True);
    #                       nonfinite() adds the rest
    stats: dict
    jvp: dict[str, np.ndarray] = field(default_factory=dict)
    hvp: dict[str, np.ndarray] = field(default_factory=dict)
    jacobians: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _check_id(name, path: tuple) -> None:
    if not isinstance(name, str) or not ID.fullmatch(name):
        raise AutogradError(f"id {name!r} must match {ID.pattern}", path=path)


def _known(name, known, path: tuple, what: str) -> str:
    if not isinstance(name, str) or name not in known:
        raise UnknownId(f"{what} names {name!r}, which is neither an input nor a node", path=path)
    return name


class Plan:
    """A checked, ordered, costed graph, ready to run on arrays of the planned shapes.

    The plan is a graph of Tensors with shapes and no data (`tensors`, by id);
    each run fills the data in and takes it out again.
    """

    def __init__(self, nodes: Sequence[Mapping], inputs: Mapping[str, Leaf], *, outputs=None,
                 grad: Mapping | None = None, seed_shape=None, jvp: Mapping | None = None,
                 hvp: Mapping | None = None, jacobian: Mapping | None = None,
                 dtype="float32", limits: Limits | None = None, vmapped: int | None = None,
                 targets: set | None = None):
        """`vmapped` and `targets` are vmap's (autograd.vmap): every tensor carries a batch
        axis of that size in front, and `targets` are nodes that may be differentiated with
        respect to as inputs are."""
        limits = limits or Limits()
        self.vmapped = vmapped
        self._nodes = nodes
        self.dtype = dt = as_dtype(dtype)
        limits.check_nodes(len(nodes))
        self.inputs = dict(inputs)
        self.tensors: dict[str, Tensor] = {}
        for name, leaf in self.inputs.items():
            _check_id(name, ("inputs", name))
            shape = tuple(leaf.shape)
            check_elements(shape, limits, ("inputs", name), f"input {name!r}")
            self.tensors[name] = Tensor._node(None, (), {}, (), shape, dt, name,
                                              requires_grad=leaf.requires_grad)
        steps, pending = self._parse(nodes)
        by_id = {s.id: s for s in steps}
        known = self.inputs.keys() | by_id.keys()  # not the constants' "#i.j": no client id
        self.targets = self.inputs.keys() | (targets or set())
        if pending:  # some arg names an id not defined before it: out of order, or unknown
            for i, j, a in pending:
                where = f"node {steps[i].id!r} ({steps[i].op.name})"
                _known(a, known, ("nodes", i, "args", j), where)
            steps = _order(steps, by_id)
        self._infer(steps, limits)

        if outputs is None:
            used = {a for s in steps for a in s.args}
            outputs = [s.id for s in sorted(steps, key=_index) if s.id not in used]
        self.outputs = [_known(o, known, ("outputs", k), "outputs")
                        for k, o in enumerate(outputs)]
        self.of, self.wrt, self.batch = self._grad_spec(grad, seed_shape, known)
        self.notes = [] if self.of is None or self.wrt else [{
            "id": self.of, "kind": "nothing_to_differentiate",
            "detail": f"grad.of {self.of!r} has nothing to differentiate: grad.wrt is empty and "
                      f"no input has requires_grad: true, so no gradient is returned"}]
        self.jvp = specs.jvp(jvp, self, known)
        self.hvp = specs.hvp(hvp, self, known)
        self.jacobian = specs.jacobian(jacobian, self, known)
        extra = self.jvp or self.hvp or self.jacobian

        roots = [*self.outputs, *([self.of] if self.of else []), *specs.roots(self)]
        needed = _ancestors(roots, self.tensors)
        self.steps = [s for s in steps if s.tensor in needed]
        self._mark([*self.wrt, *specs.reverse_targets(self)])
        self.path = self._path([self.of], self.wrt) if self.of else []
        if self.hvp:
            self.hvp.path = self._path([self.hvp.of], list(self.hvp.tangents))
        if self.jacobian and self.jacobian.mode == "reverse":
            self.jacobian.paths = {y: self._path([y], self.jacobian.wrt)
                                   for y in self.jacobian.of}
        # Extra derivatives read forward values after the forward pass: nothing is freed then.
        self.backward_frees = None if extra else liveness(self)
        self.cost = cost(self, limits)
        if extra:
            self.cost = specs.cost(self, limits)
        self._filled = [*(self.tensors[name] for name in self.inputs),
                        *(s.tensor for s in self.steps)]
        self._lock = threading.Lock()

    def shape_of(self, name: str) -> Shape:
        return self.tensors[name].shape

    @property
    def tensor_count(self) -> int:
        """How many tensors the plan holds (what a cache of plans weighs it by)."""
        return len(self.tensors)

    def returned(self) -> dict:
        """The shape of every tensor a run returns, by response member."""
        return specs.returned(self)

    def node_attrs(self, step: Step) -> dict:
        """A node's attributes as the request gave them."""
        return self._nodes[step.index].get("attrs") or {}

    @property
    def shapes(self) -> dict[str, Shape]:
        return {name: t.shape for name, t in self.tensors.items() if not name.startswith("#")}

    # -- building --------------------------------------------------------------------------

    def _parse(self, nodes) -> tuple[list[Step], list[tuple[int, int, str]]]:
        """Check each node on its own; list the args that name an id not defined before."""
        steps, seen, pending = [], set(self.inputs), []
        # one constant per distinct number, by its type and spelling: 2 is not 2.0, and -0.0
        # is not 0.0 (1 / -0.0 is -Infinity), though Python holds them equal
        literals: dict = {}
        for i, node in enumerate(nodes):
            if not hasattr(node, "get"):
                raise AutogradError(f"node {i} must be an object", path=("nodes", i))
            nid = node.get("id")
            _check_id(nid, ("nodes", i, "id"))
            if nid in seen:
                raise DuplicateId(f"id {nid!r} is used twice", path=("nodes", i, "id"), node=nid)
            name = node.get("op")
            op = OPS.get(name) if isinstance(name, str) else None
            if op is None:
                raise UnknownOp(f"node {nid!r}: unknown op {name!r}{_did_you_mean(name)}",
                                path=("nodes", i, "op"), node=nid)
            args = node.get("args", ())
            if not isinstance(args, (list, tuple)):
                raise ArityError(f"node {nid!r} ({op.name}): args must be a list",
                                 path=("nodes", i, "args"), node=nid)
            try:
                op.check_arity(len(args))
            except ArityError as e:
                raise e.within("nodes", i, "args", node=nid, context=f"node {nid!r}") from None
            ids, tensors = [], 0
            for j, a in enumerate(args):
                if a.__class__ is str:
                    ids.append(a)
                    tensors += 1
                    if a not in seen:
                        pending.append((i, j, a))
                elif is_number(a) and j in op.numbers:
                    cid = literals.get((type(a), repr(a)))
                    if cid is None:  # "#k": no id a client can send looks like this
                        cid = literals[type(a), repr(a)] = f"#{len(literals)}"
                        self.tensors[cid] = constant(a, self.dtype)
                    ids.append(cid)
                else:
                    why = "a number" if is_number(a) else type(a).__name__
                    raise AutogradError(f"node {nid!r} ({op.name}): argument {j} must be an id"
                                        f"{' or a number' if j in op.numbers else ''}, not {why}",
                                        path=("nodes", i, "args", j), node=nid)
            if not tensors:
                raise AutogradError(f"node {nid!r} ({op.name}): needs a tensor argument",
                                    path=("nodes", i, "args"), node=nid)
            try:
                attrs = op.check_attrs(node.get("attrs"))
            except AutogradError as e:
                raise e.within("nodes", i, "attrs", node=nid,
                               context=f"node {nid!r} ({op.name})") from None
            seen.add(nid)
            steps.append(Step(nid, i, op, tuple(ids), attrs))
        return steps, pending

    def _infer(self, steps, limits) -> None:
        """Every shape, in order; each node becomes a Tensor without data."""
        tensors, dt, max_elements = self.tensors, self.dtype, limits.max_elements
        for s in steps:
            parents = tuple(tensors[a] for a in s.args)
            op = s.op
            try:
                s.attrs, out = op.infer([p.shape for p in parents], s.attrs)
            except AutogradError as e:
                part = "attrs" if isinstance(e, BadAttribute) else "args"
                raise e.within("nodes", s.index, part, node=s.id,
                               context=f"node {s.id!r} ({op.name})") from None
            if max_elements is not None and extent(out) > max_elements:
                check_elements(out, limits, ("nodes", s.index), f"node {s.id!r} ({op.name})")
            if len(out) > MAX_RANK:  # NumPy stops at 64 dimensions; requests at 32
                raise ShapeMismatch(f"node {s.id!r} ({op.name}) would have rank {len(out)}; "
                                    f"the most is {MAX_RANK}", path=("nodes", s.index),
                                    node=s.id)
            s.forward = op.bind_forward(s.attrs)
            s.tensor = tensors[s.id] = Tensor._node(op, parents, s.attrs, (False,) * len(parents),
                                                    out, dt, s.id)

    def _grad_spec(self, grad, seed_shape, known):
        if not grad:
            return None, [], ()
        of = _known(grad.get("of"), known, ("grad", "of"), "grad.of")
        wrt = grad.get("wrt")
        if wrt is None:
            wrt = [name for name, leaf in self.inputs.items() if leaf.requires_grad]
        wrt = [_known(w, known, ("grad", "wrt", k), "grad.wrt") for k, w in enumerate(wrt)]
        shape = self.tensors[of].shape
        if grad.get("batch"):
            if seed_shape is None:
                raise SeedRequired("grad.batch needs a seed of shape (k, *shape(of)): k "
                                   "cotangents", path=("grad", "seed"))
            batch = specs.lead(seed_shape, shape, ("grad", "seed"), f"grad.of {of!r}")
            return of, wrt, batch
        if seed_shape is None and size(shape) != 1:
            raise SeedRequired(f"grad.of {of!r} has shape {shape}: a seed of that shape is "
                               f"required when `of` is not a single element", path=("grad",))
        if seed_shape is not None and tuple(seed_shape) != shape:
            raise ShapeMismatch(f"grad.seed has shape {tuple(seed_shape)} but {of!r} has shape "
                                f"{shape}", path=("grad", "seed"))
        return of, wrt, ()

    def _mark(self, targets) -> None:
        """Every tensor that depends on a target wants a gradient, and says from which parents."""
        tensors = self.tensors
        reach = {tensors[w] for w in targets}
        for t in reach:
            t.requires_grad = True
        for s in self.steps:
            t = s.tensor
            if not reach.isdisjoint(t.parents):
                reach.add(t)
                t.needs = tuple(p in reach for p in t.parents)
                t.requires_grad = True

    def _path(self, roots, targets) -> list[Tensor]:
        """Tensors between the roots and the targets, in topological order (marked first)."""
        tensors = self.tensors
        above = _ancestors(roots, tensors)
        wanted = {tensors[w] for w in targets}
        path = [tensors[name] for name in self.inputs if tensors[name] in wanted]
        path = [t for t in path if t in above]
        for s in self.steps:
            t = s.tensor
            if t in above and t.requires_grad and (t in wanted or any(t.needs)):
                path.append(t)
        return path

    # -- running ---------------------------------------------------------------------------

    def run(self, arrays: Mapping[str, np.ndarray], seed=None, *,
            tangents: Mapping | None = None, hvp: Mapping | None = None,
            deadline: float | None = None, anomaly: bool = False) -> Result:
        """Forward, then each derivative planned. `deadline` is time.monotonic().

        `seed` is grad's; `tangents` maps jvp's input ids to arrays; `hvp` is
        {"seed": array or None, "tangents": {id: array}}. Runs of one plan take turns (it
        holds the data while running); nothing of a run stays in the plan after it."""
        with self._lock:
            try:
                return self._run(arrays, seed, tangents, hvp, deadline, anomaly)
            finally:
                for t in self._filled:
                    t.data = None

    def _run(self, arrays, seed, tangents, hvp, deadline, anomaly) -> Result:
        tensors, dt = self.tensors, self.dtype
        for name in self.inputs:
            a = np.asarray(arrays[name], dtype=dt)
            if a.shape != tensors[name].shape:
                raise ValueError(f"input {name!r} has shape {a.shape}, planned "
                                 f"{tensors[name].shape}")
            tensors[name].data = a
        watch, clock = _Watch(anomaly), time.monotonic
        with np.errstate(all="ignore"):
            t0 = time.perf_counter()
            for s in self.steps:
                if deadline is not None and clock() > deadline:
                    raise DeadlineExceeded("the evaluation ran past its deadline and was stopped")
                t = s.tensor
                t.data = s.forward(*[p.data for p in t.parents])
                if anomaly:
                    watch.check(t, t.data, "forward")
                for dead in s.frees:
                    dead.data = None
            t1 = time.perf_counter()
            gradients = self._backward(seed, deadline, watch) if self.of else {}
            result = Result({}, gradients, self.notes + watch.found, {})
            if self.jvp:
                result.jvp = self._jvp(tangents or {}, deadline)
            if self.hvp:
                result.hvp = self._hvp(hvp or {}, deadline)
            if self.jacobian:
                result.jacobians = self._jacobians(deadline)
            t2 = time.perf_counter()
            result.outputs = {name: np.asarray(tensors[name].data) for name in self.outputs}
        result.stats = {"nodes": len(self.steps), "forward_ms": round((t1 - t0) * 1e3, 3),
                        "backward_ms": round((t2 - t1) * 1e3, 3)}
        return result

    def _backward(self, seed, deadline, watch) -> dict[str, np.ndarray]:
        tensors, dt = self.tensors, self.dtype
        of = tensors[self.of]
        if self.batch:
            seed = np.asarray(seed, dt)
            if seed.shape != self.batch + of.shape:
                raise ValueError(f"grad.seed has shape {seed.shape}, planned "
                                 f"{self.batch + of.shape}")
        else:
            seed = initial_grad(of.shape, dt, seed, path=("grad", "seed"))
        grads = backprop(self.path, {of: seed}, lead=self.batch,
                         keep=[tensors[w] for w in self.wrt], frees=self.backward_frees,
                         deadline=deadline, hook=watch.backward if watch.anomaly else None)
        # A rule may pass a value on as a gradient (d(x*y)/dx is y): such a gradient, or
        # a view, is copied on the way out, so no result is the caller's own input or another
        # result. Taken after the sweep, from values still alive: a freed array's id may
        # have been reused by a new gradient.
        shared = {id(t.data) for t in self._filled if t.data is not None} | {id(seed)}
        out = {}
        for w in self.wrt:
            g = grads.get(tensors[w])
            if g is None:
                out[w] = np.zeros(self.batch + tensors[w].shape, dt)
            elif id(g) in shared or not getattr(g, "flags", None) or not g.flags.owndata:
                out[w] = np.array(g, dt, order="C")
            else:
                out[w] = np.asarray(g, dt)
        return out

    def _jvp(self, tangents: Mapping, deadline) -> dict[str, np.ndarray]:
        tensors, dt, spec = self.tensors, self.dtype, self.jvp
        given = {tensors[n]: np.asarray(tangents[n], dt) for n in spec.tangents}
        swept = derivatives.forward_sweep([s.tensor for s in self.steps], given, spec.lead,
                                          deadline)
        return {y: _fresh(swept.get(tensors[y]), spec.lead + tensors[y].shape, dt)
                for y in spec.of}

    def _hvp(self, given: Mapping, deadline) -> dict[str, np.ndarray]:
        tensors, dt, spec = self.tensors, self.dtype, self.hvp
        of = tensors[spec.of]
        seed = given.get("seed")
        seed = np.ones(of.shape, dt) if seed is None else np.asarray(seed, dt)
        tangents = {tensors[n]: np.asarray(given["tangents"][n], dt) for n in spec.tangents}
        grads = derivatives.hessian_vector(spec.path, of, seed, tangents, spec.lead, deadline)
        return {i: _fresh(grads.get(tensors[i]), spec.lead + tensors[i].shape, dt)
                for i in spec.wrt}

    def _jacobians(self, deadline) -> dict[str, dict[str, np.ndarray]]:
        tensors, dt, spec = self.tensors, self.dtype, self.jacobian
        out: dict[str, dict[str, np.ndarray]] = {y: {} for y in spec.of}
        b = () if self.vmapped is None else (self.vmapped,)  # vmap: per example, B in front
        nb = len(b)
        if spec.mode == "reverse":  # one sweep of size(y) cotangents per output
            for y in spec.of:
                ty = tensors[y]
                eye = _directions(ty.shape, b, dt)
                grads = backprop(spec.paths[y], {ty: eye}, lead=eye.shape[:1],
                                 deadline=deadline)
                for x in spec.wrt:
                    j = _fresh(grads.get(tensors[x]), eye.shape[:1] + tensors[x].shape, dt)
                    out[y][x] = np.ascontiguousarray(np.moveaxis(j, 0, nb)).reshape(
                        ty.shape + tensors[x].shape[nb:])
        else:  # one sweep of size(x) tangents per input
            steps = [s.tensor for s in self.steps]
            for x in spec.wrt:
                tx = tensors[x]
                eye = _directions(tx.shape, b, dt)
                swept = derivatives.forward_sweep(steps, {tx: eye}, eye.shape[:1], deadline)
                for y in spec.of:
                    j = _fresh(swept.get(tensors[y]), eye.shape[:1] + tensors[y].shape, dt)
                    out[y][x] = np.ascontiguousarray(
                        np.moveaxis(j, 0, -1)).reshape(tensors[y].shape + tx.shape[nb:])
        return out


def _directions(shape, batch: tuple, dtype) -> np.ndarray:
    """One direction per element of shape (the identity), (n, *shape); under vmap the same
    directions for every example: (n, B, *example shape)."""
    eye = derivatives.identity(shape[len(batch):], dtype)
    if not batch:
        return eye
    return np.broadcast_to(eye[:, None], (eye.shape[0], *shape))


def _fresh(g, shape, dtype) -> np.ndarray:
    """A derivative as a new C-order array of `shape` (zeros when nothing reached it)."""
    if g is None:
        return np.zeros(shape, dtype)
    return np.array(np.broadcast_to(g, shape), dtype, order="C")


def plan(nodes: Sequence[Mapping], inputs: Mapping[str, Leaf], *, vmap=None, **kw) -> Plan:
    """Check, order, infer and cost a graph without allocating; see Plan. With `vmap` (input
    ids that carry a leading batch axis), a VmapPlan (autograd.vmap)."""
    if vmap is not None:
        from .vmap import VmapPlan  # it builds on Plan
        return VmapPlan(nodes, inputs, vmap, **kw)
    return Plan(nodes, inputs, **kw)


def evaluate(nodes: Sequence[Mapping], inputs: Mapping[str, np.ndarray], *, requires_grad=(),
             outputs=None, grad: Mapping | None = None, jvp: Mapping | None = None,
             hvp: Mapping | None = None, jacobian: Mapping | None = None, dtype="float32",
             limits: Limits | None = None, deadline: float | None = None,
             anomaly: bool = False, vmap: Sequence[str] | None = None) -> Result:
    """Plan and run in one call, warnings for non-finite results included (PROTOCOL.md §1,
    §8, §11). `grad` is {"of", "wrt", "seed", "batch"}; `jvp` {"of", "tangents", "batch"};
    `hvp` {"of", "seed", "wrt", "tangents", "batch"}; `jacobian` {"of", "wrt"}; arrays in
    them. `vmap` names the inputs that carry a leading batch axis."""
    seed = None if not grad else grad.get("seed")
    leaves = {name: Leaf(np.shape(a), name in requires_grad) for name, a in inputs.items()}
    p = plan(nodes, leaves, outputs=outputs, grad=grad, dtype=dtype, limits=limits,
             seed_shape=None if seed is None else np.shape(seed), jvp=shapes_of(jvp),
             hvp=shapes_of(hvp), jacobian=jacobian, vmap=vmap)
    result = p.run(inputs, seed, tangents=jvp and jvp.get("tangents"), hvp=hvp,
                   deadline=deadline, anomaly=anomaly)
    result.warnings += nonfinite(result)
    return result


def shapes_of(spec: Mapping | None) -> dict | None:
    """A jvp or hvp spec with its arrays (tangents, seed) replaced by their shapes: what a
    Plan takes."""
    if not spec:
        return None
    out = dict(spec)
    out["tangents"] = {k: np.shape(v) for k, v in (spec.get("tangents") or {}).items()}
    if spec.get("seed") is not None:
        out["seed"] = np.shape(spec["seed"])
    return out


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


def nonfinite(result: Result) -> list[dict]:
    """PROTOCOL.md §1's warnings for a result's returned tensors that hold NaN or ±Infinity.

    Reporting, not computing: Plan.run leaves it to its caller, which may already pass over
    the data (to write it out, say)."""
    found = _nonfinite(result.outputs, "outputs") + _nonfinite(result.gradients, "gradients")
    found += _nonfinite(result.jvp, "jvp") + _nonfinite(result.hvp, "hvp")
    for y, row in result.jacobians.items():
        found += [dict(w, id=f"{y}/{w['id']}") for w in _nonfinite(row, "jacobians")]
    return found


def _nonfinite(arrays: Mapping[str, np.ndarray], where: str) -> list[dict]:
    found = []
    for name, a in arrays.items():
        if np.isfinite(a).all():
            continue
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        found += [{"id": name, "in": where, "kind": kind, "count": n}
                  for kind, n in (("nan", nan), ("inf", inf)) if n]
    return found


def _did_you_mean(name) -> str:
    meant = suggest(name) if isinstance(name, str) else None
    return f"; did you mean {meant!r}?" if meant else ""


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


def _ancestors(roots, tensors: dict[str, Tensor]) -> set[Tensor]:
    """Every tensor the roots depend on, roots included; iterative."""
    stack = [tensors[name] for name in roots]
    seen = set(stack)
    while stack:
        for p in stack.pop().parents:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen
