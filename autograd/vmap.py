"""vmap (PROTOCOL.md §11): one graph run for each of B input sets, as one graph.

The graph is rewritten for a leading batch axis, op by op, by each registry
entry's batching rule (`Op.batch`): elementwise ops run as they are on
operands padded to the output's rank, ops with axes shift them past the batch
axis, and a few become short compositions of registry ops. The result is an
ordinary graph of registry ops, planned, costed and differentiated like any
other, so every derivative of §8 comes batched with no per-op work of its own.

Per-example derivatives: examples do not mix in the rewritten graph, so the
gradient of Σ_b seed_b · of_b with respect to a batched input is each
example's own gradient. A shared input (one not in `vmap.inputs`) that is
differentiated is first broadcast to (B, *shape) by a node of its own, every
use goes through it, and its gradient (B, *shape) is then per example too.
Nothing runs B times in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .cost import Limits
from .errors import AutogradError, BadAttribute, ShapeMismatch, UnknownId
from .graph import Leaf, Plan, Result
from .registry import OPS


class VmapPlan:
    """A Plan of the graph rewritten for a batch of B, answering in the request's ids."""

    def __init__(self, nodes: Sequence[Mapping], inputs: Mapping[str, Leaf], names, *,
                 outputs=None, grad=None, seed_shape=None, jvp=None, hvp=None, jacobian=None,
                 dtype="float32", limits: Limits | None = None):
        limits = limits or Limits()
        limits.check_nodes(len(nodes))
        self.batched_inputs, self.size = _batch_size(names, inputs)
        b = self.size
        for member, spec in (("grad", grad), ("jvp", jvp), ("hvp", hvp)):
            if spec and spec.get("batch"):
                raise AutogradError(f"{member}.batch and vmap do not combine: vmap already "
                                    f"gives each example its own {member}",
                                    path=(member, "batch"))
        # One example's plan checks every id, shape and attribute, with the request's paths.
        ex_leaves = {n: Leaf(leaf.shape[1:] if n in self.batched_inputs else leaf.shape,
                             leaf.requires_grad) for n, leaf in inputs.items()}
        self.example = ex = Plan(nodes, ex_leaves, outputs=outputs, grad=grad,
                                 seed_shape=self._unbatch(seed_shape, ("grad", "seed")),
                                 jvp=self._unbatch_spec(jvp, "jvp"),
                                 hvp=self._unbatch_spec(hvp, "hvp"), jacobian=jacobian,
                                 dtype=dtype, limits=Limits(max_nodes=limits.max_nodes))
        targets = set(ex.wrt)
        for spec in (ex.jvp, ex.hvp):
            if spec:
                targets |= set(spec.tangents) | set(getattr(spec, "wrt", ()))
        if ex.jacobian:
            targets |= set(ex.jacobian.wrt)
        returned = [*ex.outputs, *([ex.of] if ex.of else []), *(ex.jvp.of if ex.jvp else []),
                    *([ex.hvp.of] if ex.hvp else []), *(ex.jacobian.of if ex.jacobian else [])]
        batched_nodes, self.ref = _rewrite(ex, self.batched_inputs, b, targets, returned)
        self.original = {new: old for old, new in self.ref.items()}
        r = self.ref.get
        leaves = {n: inputs[n] for n in inputs}
        kw = {"outputs": [r(o, o) for o in ex.outputs], "dtype": dtype, "limits": limits,
              "vmapped": b, "targets": set(self.ref.values())}
        if ex.of:
            kw["grad"] = {"of": r(ex.of, ex.of), "wrt": [r(w, w) for w in ex.wrt]}
            kw["seed_shape"] = (b, *ex.tensors[ex.of].shape)
        if ex.jvp:
            kw["jvp"] = {"of": [r(y, y) for y in ex.jvp.of],
                         "tangents": {r(n, n): (b, *ex.tensors[n].shape) for n in ex.jvp.tangents}}
        if ex.hvp:
            kw["hvp"] = {"of": r(ex.hvp.of, ex.hvp.of), "wrt": [r(w, w) for w in ex.hvp.wrt],
                         "seed": (b, *ex.tensors[ex.hvp.of].shape),
                         "tangents": {r(n, n): (b, *ex.tensors[n].shape) for n in ex.hvp.tangents}}
        if ex.jacobian:
            kw["jacobian"] = {"of": [r(y, y) for y in ex.jacobian.of],
                              "wrt": [r(x, x) for x in ex.jacobian.wrt]}
        self.plan = Plan(batched_nodes, leaves, **kw)
        self.cost = self.plan.cost
        self.dtype = self.plan.dtype

    def _unbatch(self, shape, path: tuple):
        """A seed's or tangent's shape per example: (B, *shape) without its B."""
        if shape is None:
            return None
        shape = tuple(shape)
        if not shape or shape[0] != self.size:
            raise ShapeMismatch(f"with vmap over {self.size} input sets this must have shape "
                                f"({self.size}, ...), not {shape}", path=path)
        return shape[1:]

    def _unbatch_spec(self, spec, member: str):
        if not spec:
            return spec
        out = dict(spec)
        out["tangents"] = {n: self._unbatch(s, (member, "tangents", n)) if n in
                           self.batched_inputs else s
                           for n, s in (spec.get("tangents") or {}).items()}
        if spec.get("seed") is not None:
            out["seed"] = self._unbatch(spec["seed"], (member, "seed"))
        return out

    # -- what a caller reads, in the request's ids -----------------------------------------

    @property
    def steps(self):
        return self.plan.steps

    @property
    def tensor_count(self) -> int:
        return self.plan.tensor_count + self.example.tensor_count

    def shape_of(self, name: str) -> tuple:
        return (self.size, *self.example.tensors[name].shape)

    def returned(self) -> dict:
        out = self.plan.returned()
        return {member: {self.original.get(k, k): (
            {self.original.get(x, x): s for x, s in v.items()} if isinstance(v, dict) else v)
            for k, v in shapes.items()} for member, shapes in out.items()}

    def run(self, arrays: Mapping[str, np.ndarray], seed=None, *, tangents=None, hvp=None,
            deadline: float | None = None, anomaly: bool = False) -> Result:
        ex, b, ref, dt = self.example, self.size, self.ref, self.dtype

        def batched(name, a):  # a shared input's tangent, the same for every example
            a = np.asarray(a, dt)
            return a if name in self.batched_inputs else np.broadcast_to(a, (b, *a.shape))

        if ex.of and seed is None:
            seed = np.ones((b, *ex.tensors[ex.of].shape), dt)
        if tangents is not None:
            tangents = {ref.get(n, n): batched(n, t) for n, t in tangents.items()}
        if hvp is not None:
            hs = hvp.get("seed")
            hvp = {"seed": np.ones((b, *ex.tensors[ex.hvp.of].shape), dt) if hs is None else hs,
                   "tangents": {ref.get(n, n): batched(n, t)
                                for n, t in hvp["tangents"].items()}}
        r = self.plan.run(arrays, seed, tangents=tangents, hvp=hvp, deadline=deadline,
                          anomaly=anomaly)
        back = self.original.get
        r.outputs = {back(k, k): v for k, v in r.outputs.items()}
        r.gradients = {back(k, k): v for k, v in r.gradients.items()}
        r.jvp = {back(k, k): v for k, v in r.jvp.items()}
        r.hvp = {back(k, k): v for k, v in r.hvp.items()}
        r.jacobians = {back(y, y): {back(x, x): v for x, v in row.items()}
                       for y, row in r.jacobians.items()}
        return r


def _batch_size(names, inputs) -> tuple[set[str], int]:
    if not isinstance(names, (list, tuple)) or not names:
        raise AutogradError("vmap.inputs must be a non-empty list of input ids",
                            path=("vmap", "inputs"))
    sizes = {}
    for k, name in enumerate(names):
        if not isinstance(name, str) or name not in inputs:
            raise UnknownId(f"vmap.inputs names {name!r}, which is not an input",
                            path=("vmap", "inputs", k))
        shape = tuple(inputs[name].shape)
        if not shape:
            raise ShapeMismatch(f"vmap input {name!r} is 0-d: it needs a leading batch axis",
                                path=("inputs", name))
        sizes.setdefault(shape[0], name)
    if len(sizes) > 1:
        listed = ", ".join(f"{n!r}: {s}" for s, n in sizes.items())
        raise ShapeMismatch(f"vmap inputs disagree on the batch size ({listed})",
                            path=("vmap", "inputs"))
    return set(names), next(iter(sizes))


def _rewrite(ex: Plan, batched_inputs: set[str], b: int, targets: set[str],
             returned: list[str]) -> tuple[list[dict], dict[str, str]]:
    """The example plan's steps as nodes of the batched graph; and the ids that changed
    (a shared target or returned value -> its broadcast node)."""
    taken = set(ex.tensors)
    fresh_count = [0]

    def fresh(base: str) -> str:
        while True:
            fresh_count[0] += 1
            name = f"{base[:100]}.vmap{fresh_count[0]}"
            if name not in taken:
                taken.add(name)
                return name

    nodes: list[dict] = []
    batched = set(batched_inputs)
    ref: dict[str, str] = {}

    def broadcast(name: str) -> None:
        new = fresh(name)
        nodes.append(_node(new, "broadcast_to", [name], {"shape": [b, *ex.tensors[name].shape]}))
        batched.add(new)
        ref[name] = new

    for name in ex.inputs:
        if name in targets and name not in batched:
            broadcast(name)
    for s in ex.steps:
        args = [ex.tensors[a].data.item() if a.startswith("#") else ref.get(a, a)
                for a in s.args]
        flags = [isinstance(a, str) and a in batched for a in args]
        if not any(flags):
            nodes.append(_node(s.id, s.op.name, args, ex.node_attrs(s)))
        else:
            nodes += _batched_step(ex, s, args, flags, b, fresh)
            batched.add(s.id)
        if s.id in targets and s.id not in batched:
            broadcast(s.id)
    for name in returned:
        if ref.get(name, name) not in batched:
            broadcast(name)
    return nodes, ref


def _node(nid: str, op: str, args: list, attrs: dict) -> dict:
    """A node of the batched graph; attributes as a request writes them (lists, not tuples;
    the request's own, where unchanged: bound ones may not check again)."""
    node = {"id": nid, "op": op, "args": args}
    if attrs:
        node["attrs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
    return node


def _batched_step(ex: Plan, s, args: list, flags: list[bool], b: int, fresh) -> list[dict]:
    op = s.op
    in_shapes = [p.shape for p in s.tensor.parents]
    out = s.tensor.shape
    rule = op.batch
    if rule is None:
        raise BadAttribute(f"node {s.id!r} ({op.name}) cannot run under vmap",
                           path=("nodes", s.index, "op"), node=s.id)
    nodes = []
    if rule == "elementwise":  # operands padded to the output's rank, then NumPy broadcasts
        padded = []
        for a, batched, shape in zip(args, flags, in_shapes, strict=True):
            if batched and len(shape) < len(out):
                new = fresh(s.id)
                nodes.append(_node(new, "reshape", [a],
                                   {"shape": [b, *(1,) * (len(out) - len(shape)), *shape]}))
                a = new
            padded.append(a)
        return [*nodes, _node(s.id, op.name, padded, ex.node_attrs(s))]
    made = rule(s.attrs, in_shapes, out, b)
    if isinstance(made, dict):
        return [_node(s.id, op.name, args, made)]
    ids = []
    for k, (name, step_args, attrs) in enumerate(made):
        nid = s.id if k == len(made) - 1 else fresh(s.id)
        ids.append(nid)
        real = [ids[a[1]] if isinstance(a, tuple) else args[a] for a in step_args]
        if name not in OPS:  # a rule may only compose registry ops
            raise AutogradError(f"internal: batching rule of {op.name} names {name!r}")
        nodes.append(_node(nid, name, real, attrs))
    return nodes
