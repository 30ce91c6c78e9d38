"""How a derivative rule reads its operands and computes, on arrays or traced.

A rule is written once (see the package's docstring); these helpers are what
make one body serve both paths: `_x`/`_y` give arrays or Tensors, `_fn` makes
a function that is NumPy's on arrays and the registry op on Tensors, and
`_data` marks what carries no derivative.
"""

from __future__ import annotations

import numpy as np

from .. import shapes
from ..registry import INTERNAL, OPS
from ..shapes import size
from ..tensor import Tensor, apply


def _x(t, g, i=0):
    """Parent i's value: its array on the first-order path, the Tensor itself when traced."""
    p = t.parents[i]
    return p if g.__class__ is Tensor else p.data


def _y(t, g):
    """The op's output, likewise."""
    return t if g.__class__ is Tensor else t.data


def _data(v):
    """A value that carries no derivative (a sign, a mask): always an array."""
    return v.data if v.__class__ is Tensor else v


def _lead(t, g) -> tuple:
    """The batch axes `g` carries in front of `t`'s shape."""
    return tuple(g.shape[: len(g.shape) - len(t.shape)])


def _times(g, y, fresh: bool = False):
    """g * y. On arrays: no pass over the data when g is 1 broadcast (the gradient a sum
    sends back), and when y is a temporary the rule just made (`fresh`) the product goes
    into it, one buffer fewer at the peak of a backward pass over large tensors."""
    if g.__class__ is Tensor:
        return g * (Tensor(y, dtype=g.dtype) if isinstance(y, np.ndarray) else y)
    s = g.strides
    if s and not any(s) and g.size and g.shape == np.shape(y) and g.flat[0] == 1:
        return y
    if fresh and isinstance(y, np.ndarray) and y.shape == g.shape and y.dtype == g.dtype:
        return np.multiply(y, g, out=y)
    return g * y


def _zero(g):
    """A gradient of zeros (an op with no derivative): still linear in g when traced."""
    return g * 0.0 if g.__class__ is Tensor else np.zeros(g.shape, g.dtype)


def _where(mask, a, b):
    """a where the (constant) mask holds, else b: the `where` op when a or b is traced, so a
    non-finite g where the mask is off never leaks in as NaN (0 * Infinity)."""
    if a.__class__ is Tensor or b.__class__ is Tensor:
        dtype = (a if a.__class__ is Tensor else b).dtype
        return apply(OPS["where"], Tensor(mask, dtype=dtype), a, b)
    return np.where(mask, a, b)


def _broadcast(g, shape):
    """g broadcast up to `shape`: the broadcast_to op when traced."""
    if g.__class__ is Tensor:
        return apply(OPS["broadcast_to"], g, shape=shape)
    return shapes.expand(g, shape)


def _index(g, key):
    """g[key] for a NumPy basic-indexing key: the getitem op when traced."""
    if g.__class__ is Tensor:
        return apply(OPS["getitem"], g, index=key)
    return g[key]


def _fn(numpy_fn, op_name):
    """A function that is `numpy_fn` on arrays and the registry op `op_name` on Tensors."""
    def fn(x, **attrs):
        return apply(_op(op_name), x, **attrs) if x.__class__ is Tensor else numpy_fn(x, **attrs)
    return fn


def _op(name):
    return OPS.get(name) or INTERNAL[name]


def _same(s, **_):
    return s


def _in_flops(in_shapes, out, attrs):
    return sum(size(s) for s in in_shapes)


def _zero_flops(*_):
    return 0
