"""The Tensor, eager op application, and the one reverse-mode sweep.

A Tensor holds its data, its gradient, the op that made it and its parents,
as in the seed. Its kind is INPUT (needs no gradient), PARAMETER (needs one)
or INTERMEDIATE (needs one when any parent does). Every op of the registry
is a method, the Python operators build the ops that declare them, and
`backward` runs `backprop`, which the graph runner shares.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .errors import (
    AutogradError,
    BadTensor,
    DeadlineExceeded,
    DtypeMismatch,
    SeedRequired,
    ShapeMismatch,
)
from .registry import DTYPES, OPS, Op, is_number
from .shapes import size, unbroadcast


class Kind(enum.Enum):
    """The seed's TensorType."""

    INPUT = "input"
    PARAMETER = "parameter"
    INTERMEDIATE = "intermediate"


_DTYPES = {np.dtype(name) for name in DTYPES}


def as_dtype(dtype) -> np.dtype:
    """float32 (the default, as the seed) or float64; anything else is refused."""
    dt = np.dtype("float32" if dtype is None else dtype)
    if dt not in _DTYPES:  # a set lookup: dtype.name is slow Python code in NumPy
        raise DtypeMismatch(f"dtype must be one of {list(DTYPES)}, not {dt.name!r}")
    return dt


class Tensor:
    __slots__ = ("data", "grad", "parents", "op", "attrs", "needs", "requires_grad", "shape",
                 "dtype", "name")
    # NumPy must not treat a Tensor as an object to broadcast over: `ndarray + Tensor` is a
    # TypeError (wrap the array in a Tensor) instead of an object array of Tensors.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, *, dtype=None, name: str | None = None):
        dt = as_dtype(dtype)
        try:
            arr = np.asarray(data, dtype=dt)
        except (TypeError, ValueError) as e:
            raise BadTensor(f"cannot make a {dt.name} tensor from this data: {e}") from None
        self.data = arr
        self.grad = None
        self.parents = ()
        self.op = None
        self.attrs = {}
        self.needs = ()
        self.requires_grad = bool(requires_grad)
        self.shape = arr.shape
        self.dtype = dt
        self.name = name

    @classmethod
    def _node(cls, op: Op | None, parents: tuple, attrs: dict, needs: tuple, shape, dtype,
              name: str | None = None, data=None, requires_grad: bool | None = None) -> Tensor:
        """A tensor made by an op (or a planned leaf); `needs[i]`: parent i wants a gradient.

        The planner builds whole graphs of these with `data` None: shapes first, data
        at run time."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.parents = parents
        t.op = op
        t.attrs = attrs
        t.needs = needs
        t.requires_grad = (True in needs) if requires_grad is None else requires_grad
        t.shape = shape
        t.dtype = dtype
        t.name = name
        return t

    def __repr__(self) -> str:
        made = f", op={self.op.name}" if self.op else ""
        return (f"Tensor({np.array2string(np.asarray(self.data), threshold=20)}, "
                f"kind={self.kind.name}{made}, dtype={self.dtype.name})")

    @property
    def kind(self) -> Kind:
        if self.op is not None:
            return Kind.INTERMEDIATE
        return Kind.PARAMETER if self.requires_grad else Kind.INPUT

    @property
    def size(self) -> int:
        return size(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self) -> np.ndarray:
        return np.asarray(self.data)

    def item(self) -> float:
        return np.asarray(self.data).item()

    def T(self) -> Tensor:  # noqa: N802 (the seed's name)
        """All axes reversed, as the seed's `.T`."""
        return apply(OPS["transpose"], self)

    def backward(self, gradient=None) -> None:
        """Accumulate d(self)/d(t) into `t.grad` for every tensor that requires a gradient.

        A tensor of one element needs no `gradient`; any other needs one of its
        shape (as torch.Tensor.backward).
        """
        if not self.requires_grad:
            raise AutogradError("backward() of a tensor that requires no gradient: "
                                "nothing it depends on is a PARAMETER")
        seed = initial_grad(self.shape, self.dtype, gradient)
        order = toposort([self], lambda t: t.requires_grad)
        for t, g in backprop(order, {self: seed}).items():
            # a copy: g may be a read-only broadcast view, or the caller's own `gradient`
            t.grad = np.array(g) if t.grad is None else t.grad + g


def initial_grad(shape, dtype, gradient=None, *, path: tuple = ()) -> np.ndarray:
    """The gradient that starts a backward pass: ones for one element, else the caller's."""
    if gradient is None:
        if size(shape) != 1:
            raise SeedRequired(f"a tensor of shape {shape} needs an explicit gradient (seed) "
                               f"of that shape; only one-element tensors have an implicit one",
                               path=path)
        return np.ones(shape, dtype)
    g = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=dtype)
    if g.shape != tuple(shape):
        raise ShapeMismatch(f"gradient (seed) of shape {g.shape} does not match shape {shape}",
                            path=path)
    return g


def constant(value, dtype) -> Tensor:
    """A number literal as a 0-d INPUT tensor of the computation's dtype (1e39 in float32 is
    Infinity, as NumPy has it, without a warning)."""
    with np.errstate(over="ignore"):
        return Tensor(value, dtype=dtype)


def apply(op: Op, *args, **attrs) -> Tensor:
    """Run one op eagerly: arity, dtypes, attributes and shapes checked, then forward.

    A parent without data (a traced symbol, see derivatives.py) gives an output without
    data: its shape is inferred and the node recorded, nothing computed."""
    op.check_arity(len(args))
    dtypes = {a.dtype for a in args if isinstance(a, Tensor)}
    if not dtypes:
        raise TypeError(f"{op.name} needs at least one Tensor argument")
    if len(dtypes) > 1:
        raise DtypeMismatch(f"{op.name} mixes dtypes {sorted(d.name for d in dtypes)}; "
                            f"convert explicitly")
    dtype = dtypes.pop()
    parents = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            parents.append(a)
        elif i in op.numbers and is_number(a):
            parents.append(constant(a, dtype))
        else:
            kind = "a Tensor or a number" if i in op.numbers else "a Tensor"
            raise TypeError(f"argument {i} of {op.name} must be {kind}, not {type(a).__name__}")
    attrs, shape = op.infer([p.shape for p in parents], op.check_attrs(attrs))
    needs = tuple(p.requires_grad for p in parents)
    if any(p.data is None for p in parents):
        return Tensor._node(op, tuple(parents), attrs, needs, shape, dtype)
    data = np.asarray(op.bind_forward(attrs)(*[p.data for p in parents]))
    return Tensor._node(op, tuple(parents), attrs, needs, data.shape, data.dtype, data=data)


def toposort(roots: Iterable[Tensor], include: Callable[[Tensor], bool]) -> list[Tensor]:
    """Parents before children, iteratively (no recursion limit), over tensors `include` keeps.

    Depth-first, a tensor is placed when everything above it is: marked on expansion, not
    on push, so a value reached by paths of different depth still precedes all its users."""
    order, expanded = [], set()
    stack = [(r, False) for r in roots]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if t in expanded:
            continue
        expanded.add(t)
        stack.append((t, True))
        stack.extend((p, False) for p in t.parents if p not in expanded and include(p))
    return order


def backprop(path: Sequence[Tensor], seeds: dict, *, lead: tuple = (),
             keep: Iterable[Tensor] | None = None,
             frees: Sequence[Sequence[Tensor]] | None = None, deadline: float | None = None,
             hook: Callable | None = None) -> dict:
    """Reverse-mode sweep: d(Σ seed · root)/d(t) for the tensors of `path` (topological,
    ending in the roots that `seeds` maps to their incoming gradients).

    Rules run only where `t.needs` asks; the engine, not the rule, reduces a
    broadcast gradient and checks the tuple's length. Gradients are arrays, or
    Tensors when the seeds are (the sweep is then traced and can be differentiated
    again). `lead` is the shape of batch axes every gradient carries in front (k
    cotangents at once). With `keep`, gradients of other tensors are dropped once
    passed on, and `frees[i]` lists the tensors whose forward data step i (counted
    from the end) was the last to read. `deadline` (time.monotonic()) is checked
    before each rule; `hook(t, grads)` sees each rule's result (anomaly detection).
    """
    grads = dict(seeds)
    owned = set()  # gradients this sweep allocated, safe to add into in place
    keep = None if keep is None else set(keep)
    clock = time.monotonic
    for i, t in enumerate(reversed(path)):
        g = grads.get(t) if keep is None or t in keep else grads.pop(t, None)
        if g is None or t.op is None:
            continue
        if deadline is not None and clock() > deadline:
            raise DeadlineExceeded("the evaluation ran past its deadline and was stopped")
        pgs = t.op.grad(t, g)
        g = None  # passed on: let it go before anything below allocates
        if len(pgs) != len(t.parents):
            raise AutogradError(f"internal: {t.op.name} returned {len(pgs)} gradients "
                                f"for {len(t.parents)} parents", node=t.name)
        if hook is not None:
            hook(t, pgs)
        for p, need, pg in zip(t.parents, t.needs, pgs, strict=False):  # lengths checked above
            if not need:
                continue
            if pg.shape != lead + p.shape:
                pg = unbroadcast(pg, p.shape, len(lead))
            prev = grads.get(p)
            if prev is None:
                grads[p] = pg
            elif p in owned and isinstance(prev, np.ndarray):
                np.add(prev, pg, out=prev)
            else:
                grads[p] = prev + pg
                owned.add(p)
        pgs = pg = prev = None  # likewise: held here, they would sit through the next rule
        if frees is not None:
            for dead in frees[i]:
                dead.data = None
    return grads
