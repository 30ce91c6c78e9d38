"""The graph builder: nodes that read like the seed's tensors and write PROTOCOL.md JSON.

    g = Graph()
    x = g.input("x", [[1.0, 2.0], [3.0, 4.0]])
    w = g.parameter("w", [[0.5], [-0.25]])
    loss = (x @ w).sigmoid().mean()
    g.to_json(loss, grad_of=loss)       # the body of POST /v1/evaluate

Nothing is computed here. Each op is checked as it is written, with the
engine's own registry (arity, attributes, shape rule), so a mistake raises
at the line that made it, with the code the server would answer; and every
node knows its shape. The methods and operators of `Node` are generated
from `autograd.registry.OPS`, as `autograd.Tensor`'s are: a new op in the
registry is a new method here with no edit.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from autograd import DTYPES, OPS, AutogradError, Leaf, Op, plan
from autograd.expr import expand
from autograd.graph import ID
from autograd.registry import install, is_number

from . import codec
from .errors import from_engine


class Node:
    """An input, a parameter, or the result of an op in one Graph."""

    __slots__ = ("graph", "id", "op", "args", "attrs", "shape", "_value", "requires_grad")
    __array_ufunc__ = None  # `ndarray + node` defers to Node.__radd__ (and then refuses)

    def __init__(self, graph: Graph, name: str, *, op: Op | None = None, args: tuple = (),
                 attrs: dict | None = None, shape: tuple = (), value=None,
                 requires_grad: bool = False):
        self.graph, self.id, self.op, self.args = graph, name, op, args
        self.attrs = attrs or {}
        self.shape, self._value, self.requires_grad = shape, value, requires_grad

    def __repr__(self) -> str:
        made = f"{self.op.name}, " if self.op else ""
        return f"Node({self.id!r}, {made}{self.kind}, shape={self.shape})"

    @property
    def value(self) -> np.ndarray | None:
        """An input's or a parameter's array (float64); None for an op's result."""
        return self._value

    @value.setter
    def value(self, new) -> None:
        """A new value for a leaf, of the same shape: the graph is sent again with it, not
        rebuilt (the training loop: `p.value -= lr * r.grad(p)`)."""
        if self.op is not None:
            raise AttributeError(f"{self.id!r} is computed by {self.op.name}; only an input's "
                                 f"or a parameter's value can be set")
        new = _as_value(self.id, new)
        if new.shape != self.shape:
            raise ValueError(f"{self.kind} {self.id!r} has shape {self.shape}, the new value "
                             f"{new.shape}: every node after it was checked for {self.shape} "
                             f"(build a new Graph for another shape)")
        self._value = new

    @property
    def kind(self) -> str:
        if self.op is not None:
            return "node"
        return "parameter" if self.requires_grad else "input"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def named(self, name: str) -> Node:
        """Give this node its own id (instead of a generated one); returns the node."""
        self.graph._rename(self, name)
        return self

    def T(self) -> Node:  # noqa: N802 (the seed's name)
        """All axes reversed, as the seed's `.T`."""
        return build(OPS["transpose"], self)


class Graph:
    """The nodes of one computation, in the order they were made (a topological order)."""

    def __init__(self):
        self._nodes: list[Node] = []
        self._by_id: dict[str, Node] = {}
        self._counter = 0

    def __repr__(self) -> str:
        return f"Graph({len(self._nodes)} nodes)"

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def __getitem__(self, name: str) -> Node:
        return self._by_id[name]

    # -- leaves ----------------------------------------------------------------------------

    def input(self, name: str, value) -> Node:
        """A plain input (the seed's TensorType.INPUT): no gradient unless asked in `wrt`."""
        return self._leaf(name, value, False)

    def parameter(self, name: str, value) -> Node:
        """A trainable parameter (TensorType.PARAMETER): in `wrt` by default."""
        return self._leaf(name, value, True)

    @property
    def parameters(self) -> list[Node]:
        return [n for n in self._nodes if n.requires_grad and n.op is None]

    def _leaf(self, name: str, value, requires_grad: bool) -> Node:
        value = _as_value(name, value)
        node = Node(self, name, shape=value.shape, value=value, requires_grad=requires_grad)
        return self._add(node, name)

    def _add(self, node: Node, name: str) -> Node:
        _check_id(name)
        if name in self._by_id:
            raise ValueError(f"id {name!r} is already used in this graph")
        node.id = name
        self._by_id[name] = node
        self._nodes.append(node)
        return node

    def _fresh_id(self, prefix: str) -> str:
        while True:
            name, self._counter = f"{prefix}_{self._counter}", self._counter + 1
            if name not in self._by_id:
                return name

    def _rename(self, node: Node, name: str) -> None:
        _check_id(name)
        if self._by_id.get(name, node) is not node:
            raise ValueError(f"id {name!r} is already used in this graph")
        del self._by_id[node.id]
        node.id = name
        self._by_id[name] = node

    # -- expressions (PROTOCOL.md §12) ------------------------------------------------------

    def expr(self, text: str, name: str | None = None) -> Node:
        """The node an expression over this graph's ids computes, built op by op (and checked
        as each is), e.g. ``g.expr("mean(sigmoid(x @ w + b))")``; `name` gives it an id."""
        key = name if name is not None else self._fresh_id("expr")
        if name is not None:
            _check_id(name)
        try:
            nodes = expand([], {key: text}, self._by_id)
        except AutogradError as e:
            raise from_engine(e) from None
        try:  # shapes checked here, so that a mistake has its column
            plan(nodes, {i: Leaf(n.shape) for i, n in self._by_id.items()})
        except AutogradError as e:
            raise from_engine(nodes.locate(e)) from None
        made: dict[str, Node] = {}
        for n in nodes:
            args = [(made[a] if a in made else self._by_id[a]) if isinstance(a, str) else a
                    for a in n["args"]]
            made[n["id"]] = build(OPS[n["op"]], *args, **n.get("attrs", {}))
        return made[key].named(name) if name is not None else made[key]

    # -- the request body ------------------------------------------------------------------

    def to_json(self, *outputs, grad_of=None, wrt=None, seed=None, batch: bool = False,
                jvp: Mapping | None = None, hvp: Mapping | None = None,
                jacobian: Mapping | None = None, vmap: Mapping | None = None,
                dtype: str = "float32", encoding: str | None = None, anomaly: bool = False,
                values: bool = True) -> dict:
        """The body of POST /v1/evaluate (PROTOCOL.md §1, §8) for these outputs and derivatives.

        Where the protocol names an id, a Node or its id will do. Only what the request
        names, and what that depends on, is sent. `wrt` defaults to every parameter of the
        graph; `seed` is the incoming gradient when `grad_of` is not a single element, with
        `batch` k of them along a leading axis. `jvp`, `hvp` and `jacobian` are dicts with
        the members of PROTOCOL.md §8 (`{"of": [y], "tangents": {x: array}}`, ...); their
        `wrt` too defaults to every parameter. `encoding` None asks for base64 when a
        returned tensor is large. `values=False` writes every tensor by its shape alone:
        the body of POST /v1/shapes. `vmap` maps leaves to B input sets each, arrays with a
        leading axis B (PROTOCOL.md §11): the graph runs for each, everything comes back
        with the leading B; the leaves' own values give the shapes of one example.
        """
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")

        def tensor(a) -> dict:
            return codec.encode(a, dtype) if values else {"shape": list(np.shape(a))}

        named: list[Node] = []  # every Node the request names: they and their inputs are sent
        ref = functools.partial(self._ref, named)
        asked: dict = {"outputs": _ids(outputs, ref)}
        if grad_of is None:
            if wrt is not None or seed is not None or batch:
                raise ValueError("wrt, seed and batch need grad_of")
        else:
            wrt = self.parameters if wrt is None else listed(wrt)
            asked["grad"] = {"of": ref(grad_of), "wrt": _ids(wrt, ref)}
            if batch:
                asked["grad"]["batch"] = True
            if seed is not None:
                asked["grad"]["seed"] = tensor(seed)
        for member, spec in (("jvp", jvp), ("hvp", hvp), ("jacobian", jacobian)):
            if spec is None:
                continue
            if member != "jvp" and isinstance(spec, Mapping) and spec.get("wrt") is None:
                spec = {**spec, "wrt": self.parameters}  # as grad's: every parameter
            asked[member] = _spec(member, spec, ref, tensor)

        # Without outputs or anything to differentiate, the whole graph is sent: the server
        # returns (and jvp.of defaults to) every node no other node uses.
        chosen = asked["outputs"] or {"grad", "hvp", "jacobian"} & asked.keys() or (
            "of" in asked.get("jvp", {}))
        nodes = self._needed(named) if chosen else self._nodes
        batched = {}
        for leaf, values_ in (vmap or {}).items():
            leaf = self._by_id.get(leaf) if isinstance(leaf, str) else leaf
            if not isinstance(leaf, Node) or leaf.graph is not self or leaf.op is not None:
                raise ValueError(f"vmap maps leaves of this graph to arrays, not {leaf!r}")
            values_ = np.asarray(values_)
            if values_.shape[1:] != leaf.shape:
                raise ValueError(f"vmap's arrays for {leaf.id!r} must have shape (B, "
                                 f"*{leaf.shape}), not {values_.shape}")
            batched[leaf] = values_
        nodes = nodes + [n for n in batched if n not in nodes]
        body: dict = {
            "inputs": {n.id: {**tensor(batched.get(n, n.value)), "requires_grad": n.requires_grad}
                       for n in nodes if n.op is None},
            "nodes": [_node_json(n) for n in nodes if n.op is not None],
        }
        if asked["outputs"]:
            body["outputs"] = asked["outputs"]
        body.update((k, v) for k, v in asked.items() if k != "outputs")
        if batched:
            body["vmap"] = {"inputs": [n.id for n in batched]}
        b = max((len(v) for v in batched.values()), default=1)
        body["dtype"] = dtype
        body["encoding"] = encoding or codec.encoding_for(
            [b * n for n in self._returned_sizes(body, nodes)])
        if anomaly:
            body["anomaly"] = True
        return body

    def _ref(self, named: list, node) -> str:
        """The id of a Node of this graph, or an id as given (the server checks it)."""
        if isinstance(node, Node):
            if node.graph is not self:
                raise ValueError(f"node {node.id!r} belongs to another Graph")
            named.append(node)
            return node.id
        if isinstance(node, str):
            if node in self._by_id:
                named.append(self._by_id[node])
            return node
        raise TypeError(f"expected a Node or an id, not {type(node).__name__}")

    def _returned_sizes(self, body: dict, sent: list[Node]) -> list[int]:
        """Elements of each tensor the response will hold, as far as the graph knows them."""
        def size(name: str) -> int:
            return self._by_id[name].size if name in self._by_id else 0

        if "outputs" in body:
            outputs = body["outputs"]
        else:  # the server's default: every node no other node uses
            used = {a for n in sent for a in n.args if isinstance(a, Node)}
            outputs = [n.id for n in sent if n.op is not None and n not in used]
        sizes = [size(o) for o in outputs]
        if "grad" in body:
            sizes += [_k(body["grad"], "seed") * size(w) for w in body["grad"]["wrt"]]
        if "jvp" in body:
            jvp = body["jvp"]
            sizes += [_k(jvp, "tangents") * size(y) for y in jvp.get("of", outputs)]
        if "hvp" in body:
            hvp = body["hvp"]
            sizes += [_k(hvp, "tangents") * size(w) for w in hvp["wrt"]]
        if "jacobian" in body:
            jac = body["jacobian"]
            sizes += [size(y) * size(x) for y in jac.get("of", []) for x in jac["wrt"]]
        return sizes

    def _needed(self, roots: Sequence[Node]) -> list[Node]:
        """The roots and everything they depend on, in graph order."""
        seen, stack = set(roots), list(roots)
        while stack:
            for a in stack.pop().args:
                if isinstance(a, Node) and a not in seen:
                    seen.add(a)
                    stack.append(a)
        return [n for n in self._nodes if n in seen]

    # -- a picture -------------------------------------------------------------------------

    def to_dot(self, result=None) -> str:
        """Graphviz DOT of the graph: ops, ids and shapes; with a Result, values and gradients.

        Render with `dot -Tsvg`, or paste into any Graphviz viewer.
        """
        lines = ["digraph gradserve {", "  rankdir=LR;",
                 '  node [fontname="Helvetica", fontsize=10];']
        for n in self._nodes:
            text = [n.id if n.op is None else f"{n.id} = {n.op.name}{_attrs_text(n.attrs)}",
                    f"{n.kind} {list(n.shape)}" if n.op is None else f"{list(n.shape)}"]
            if result is not None:
                if n.id in result.outputs:
                    text.append("value " + _summary(result.outputs[n.id]))
                if n.id in result.gradients:
                    text.append("grad " + _summary(result.gradients[n.id]))
            style = {"input": "shape=box", "parameter": 'shape=box, style=filled, '
                     'fillcolor="#fff3c4"', "node": "shape=ellipse"}[n.kind]
            lines.append(f"  {_q(n.id)} [{style}, label={_q(chr(10).join(text))}];")
            for k, a in enumerate(n.args):
                label = f" [label={_q(str(k))}]" if len(n.args) > 1 else ""
                if isinstance(a, Node):
                    lines.append(f"  {_q(a.id)} -> {_q(n.id)}{label};")
                else:
                    lit = f"{n.id}#{k}"
                    lines.append(f"  {_q(lit)} [shape=plaintext, label={_q(repr(a))}];")
                    lines.append(f"  {_q(lit)} -> {_q(n.id)}{label};")
        lines.append("}")
        return "\n".join(lines) + "\n"


# ---- building one op --------------------------------------------------------------------

def build(op: Op, *args, **attrs) -> Node:
    """One op applied to nodes (and number literals where the op allows), checked now."""
    try:
        op.check_arity(len(args))
        graphs = {a.graph for a in args if isinstance(a, Node)}
        if not graphs:
            raise TypeError(f"{op.name} needs at least one Node argument")
        if len(graphs) > 1:
            raise ValueError(f"{op.name}: nodes from different Graphs cannot be mixed; build "
                             f"the whole computation in one Graph")
        for i, a in enumerate(args):
            if not (isinstance(a, Node) or (i in op.numbers and _json_number(a))):
                kind = "a Node or a finite number" if i in op.numbers else "a Node"
                raise TypeError(f"argument {i} of {op.name} must be {kind}, "
                                f"not {type(a).__name__}")
        checked = op.check_attrs(attrs)
        _, shape = op.infer([a.shape if isinstance(a, Node) else () for a in args], checked)
    except AutogradError as e:
        raise from_engine(e) from None
    (graph,) = graphs
    literals = tuple(a if isinstance(a, Node) else _literal(a) for a in args)
    given = {name: _jsonable(checked[name]) for name in attrs}
    node = Node(graph, "", op=op, args=literals, attrs=given, shape=shape)
    return graph._add(node, graph._fresh_id(op.name))


def _literal(v):
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _node_json(n: Node) -> dict:
    out = {"id": n.id, "op": n.op.name,
           "args": [a.id if isinstance(a, Node) else a for a in n.args]}
    if n.attrs:
        out["attrs"] = n.attrs
    return out


def _as_value(name: str, value) -> np.ndarray:
    """A leaf's value as a float64 array (a copy): real numbers only, as on the wire."""
    try:
        given = np.asarray(value)
        if given.dtype.kind in "bc":
            raise TypeError(f"not {given.dtype}")
        return np.array(given, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"input {name!r} must be real numbers: {e}") from None


def _check_id(name) -> None:
    if not isinstance(name, str) or not ID.fullmatch(name):
        raise ValueError(f"id {name!r} must match {ID.pattern}")


# ---- the derivative members (PROTOCOL.md §8) -------------------------------------------

# Each member's keys, as the wire spells them.
SPECS = {"jvp": ("of", "tangents", "batch"),
         "hvp": ("of", "seed", "wrt", "tangents", "batch"),
         "jacobian": ("of", "wrt")}


def _spec(member: str, spec: Mapping, ref, tensor) -> dict:
    """One of jvp, hvp, jacobian as the wire writes it: Nodes as ids, arrays as tensors.

    Keys left out or None take the server's defaults."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"{member} is a dict with keys {', '.join(SPECS[member])}")
    unknown = sorted(set(spec) - set(SPECS[member]))
    if unknown:
        raise TypeError(f"{member} takes {', '.join(SPECS[member])}, not {', '.join(unknown)}")
    out: dict = {}
    for key, v in spec.items():
        if v is None:
            continue
        if key == "of" and member == "hvp":  # one id: the scalar (or seeded) function
            out[key] = ref(v)
        elif key in ("of", "wrt"):
            out[key] = _ids(listed(v), ref)
        elif key == "tangents":
            if not isinstance(v, Mapping):
                raise TypeError(f"{member}.tangents maps inputs (Nodes or ids) to arrays")
            out[key] = {ref(n): tensor(a) for n, a in v.items()}
        elif key == "seed":
            out[key] = tensor(v)
        else:
            out[key] = bool(v)
    return out


def _ids(nodes, ref) -> list[str]:
    """Nodes and ids as ids, each once, in order."""
    return list(dict.fromkeys(ref(n) for n in nodes))


def listed(nodes) -> list:
    """One Node or id, or several."""
    return [nodes] if isinstance(nodes, (Node, str)) else list(nodes)


def _k(spec: dict, key: str) -> int:
    """The number of directions of a batched member (1 when not batched)."""
    if not spec.get("batch"):
        return 1
    given = spec.get(key)
    tensors = given.values() if key == "tangents" else [given]
    return next((t["shape"][0] for t in tensors if t and t.get("shape")), 1)


# ---- methods and operators, generated from the registry (as for autograd's Tensor) -------

def _json_number(v) -> bool:
    return is_number(v) and math.isfinite(v)  # JSON has no Infinity literal


FUNCTIONS = install(Node, build, number=_json_number)


# ---- DOT helpers ------------------------------------------------------------------------

def _q(text: str) -> str:
    """A DOT string: JSON's quoting is DOT's (\\" and \\n)."""
    return json.dumps(text)


def _attrs_text(attrs: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + ")" if attrs else ""


def _summary(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.size <= 8:
        text = np.array2string(a, separator=", ", formatter={"float_kind": "{:.4g}".format})
        return text.replace("\n", "")
    return f"mean {a.mean():.4g}, min {a.min():.4g}, max {a.max():.4g}"
