"""Every op of PROTOCOL.md §2, each defined once: forward, gradient, shape.

Gradient rules take the seed's signature ``(t, g) -> tuple`` where `t` is the
op's output tensor (its `.data`, `.parents`, `.attrs` and `.needs`, which
says which parents want a gradient) and `g` the incoming gradient of `t`'s
shape. A rule may return None for a parent that does not need one, and may
return a gradient of the broadcast shape: the engine reduces it to the
parent's shape (shapes.unbroadcast) and checks the tuple's length.
"""

from __future__ import annotations

import math

import numpy as np

from . import shapes
from .errors import ShapeMismatch
from .registry import Attr, defop
from .shapes import size


def _x(t, i=0):
    return t.parents[i].data


def _times(g, y, fresh: bool = False):
    """g * y. No pass over the data when g is 1 broadcast (the gradient a sum sends back);
    when y is a temporary the rule just made (`fresh`), the product goes into it, one
    buffer fewer at the peak of a backward pass over large tensors."""
    s = g.strides
    if s and s[-1] == 0 and not any(s) and g.shape == np.shape(y) and g.flat[0] == 1:
        return y
    if fresh and isinstance(y, np.ndarray) and y.shape == g.shape:
        return np.multiply(y, g, out=y)
    return g * y


def _same(s, **_):
    return s


def _in_flops(in_shapes, out, attrs):
    return sum(size(s) for s in in_shapes)


# ---- arithmetic -------------------------------------------------------------------------

defop("add", 2, np.add, lambda t, g: (g, g), shapes.broadcast,
      "x + y", "g, g", numbers=(0, 1), operator="+")

defop("sub", 2, np.subtract, lambda t, g: (g, -g if t.needs[1] else None), shapes.broadcast,
      "x - y", "g, -g", numbers=(0, 1), operator="-")

defop("mul", 2, np.multiply,
      lambda t, g: (_times(g, _x(t, 1)) if t.needs[0] else None,
                    _times(g, _x(t, 0)) if t.needs[1] else None),
      shapes.broadcast, "x * y", "g * y, g * x", numbers=(0, 1), saves="x", operator="*")


def _mT(a):
    return a.swapaxes(-1, -2)


def _matmul_flops(in_shapes, out, attrs):
    return 2 * size(out) * in_shapes[0][-1]


# The seed's `.T` reverses every axis; only the last two may swap for batched operands.
defop("matmul", 2, np.matmul,
      lambda t, g: (g @ _mT(_x(t, 1)) if t.needs[0] else None,
                    _mT(_x(t, 0)) @ g if t.needs[1] else None),
      shapes.matmul, "x @ y (batch dimensions broadcast)", "g @ swap(y), swap(x) @ g, summed "
      "over broadcast batch dimensions", saves="x", flops=_matmul_flops, operator="@")


def _pow_grad(t, g):
    n = t.attrs["exponent"]
    if n == 0:  # d/dx x**0 is 0 everywhere, also at x = 0 where n * x**-1 is nan
        return (np.zeros_like(g),)
    return (_times(g, n * _x(t) ** (n - 1), fresh=True),)


defop("pow", 1, lambda x, exponent: x ** exponent, _pow_grad, _same,
      "x ** exponent", "g * exponent * x ** (exponent - 1)", saves="x", operator="**",
      attrs=(Attr("exponent", "number", doc="the power, a number"),))

defop("neg", 1, np.negative, lambda t, g: (-g,), _same, "-x", "-g", operator="-x")

defop("abs", 1, np.abs, lambda t, g: (_times(g, np.sign(_x(t)), fresh=True),), _same,
      "|x|", "g * sign(x), 0 at 0", saves="x")


# ---- shape ------------------------------------------------------------------------------

def _transpose_bind(s, axes):
    return {"axes": shapes.permutation(axes, len(s))}


def _inverse(perm):
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


defop("transpose", 1, lambda x, axes: np.transpose(x, axes),
      lambda t, g: (np.transpose(g, _inverse(t.attrs["axes"])),),
      lambda s, axes: tuple(s[i] for i in axes),
      "x with its axes permuted (default: all reversed, x.T)", "g with the inverse permutation",
      attrs=(Attr("axes", "perm", None, "a permutation of the dimensions; null reverses them"),),
      bind=_transpose_bind, flops=lambda *_: 0)

defop("reshape", 1, lambda x, shape: np.reshape(x, shape),
      lambda t, g: (np.reshape(g, t.parents[0].shape),),
      lambda s, shape: shape,
      "x with a new shape of as many elements", "g reshaped to x's shape",
      attrs=(Attr("shape", "shape", doc="the new shape; one dimension may be -1"),),
      bind=lambda s, shape: {"shape": shapes.reshape(s, shape)}, flops=lambda *_: 0)


# ---- reductions -------------------------------------------------------------------------

_REDUCE_ATTRS = (
    Attr("axis", "axes", None, "the axes to reduce: an int, a list of ints, or null for all"),
    Attr("keepdims", "bool", False, "keep reduced axes with size 1"),
)


def _reduce_bind(s, axis, keepdims):
    return {"axis": shapes.axes(axis, len(s)), "keepdims": keepdims}


def _reduce_shape(s, axis, keepdims):
    return shapes.reduced(s, axis, keepdims)


def _expand(t, g):
    """Undo a reduction: g back to the input's shape, as a broadcast view."""
    x = t.parents[0]
    if not t.attrs["keepdims"]:
        g = g.reshape(shapes.reduced(x.shape, t.attrs["axis"], True))
    return shapes.expand(g, x.shape)


def _count(shape, axis) -> int:
    """How many elements each output of a reduction over `axis` (normalised) takes in."""
    return size(shape) if axis is None else math.prod(shape[i] for i in axis)


defop("sum", 1, lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
      lambda t, g: (_expand(t, g),), _reduce_shape,
      "Σ x over axis", "g broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops)

def _mean(x, axis=None, keepdims=False):
    # Σ/n, not np.mean: an empty mean is NaN here without np.mean's Python-level warning
    return np.sum(x, axis=axis, keepdims=keepdims) / _count(np.shape(x), axis)


defop("mean", 1, _mean,
      lambda t, g: (_expand(t, g / _count(t.parents[0].shape, t.attrs["axis"])),),
      _reduce_shape,
      "Σ x / n over axis", "g / n broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops)


# ---- elementwise math -------------------------------------------------------------------

defop("exp", 1, np.exp, lambda t, g: (_times(g, t.data),), _same, "e^x", "g * e^x", saves="y")
defop("log", 1, np.log, lambda t, g: (g / _x(t),), _same, "ln x", "g / x", saves="x")
defop("sqrt", 1, np.sqrt, lambda t, g: (g / (2 * t.data),), _same,
      "√x", "g / (2 √x)", saves="y")
defop("sin", 1, np.sin, lambda t, g: (_times(g, np.cos(_x(t)), fresh=True),), _same,
      "sin x", "g * cos x", saves="x")
defop("cos", 1, np.cos, lambda t, g: (_times(g, -np.sin(_x(t)), fresh=True),), _same,
      "cos x", "-g * sin x", saves="x")
defop("tan", 1, np.tan, lambda t, g: (_times(g, np.cos(_x(t)) ** -2, fresh=True),), _same,
      "tan x", "g * sec² x", saves="x")


# ---- activations ------------------------------------------------------------------------

def _sigmoid(x):
    # exp of -|x| only: never overflows, keeps tiny values for large negative x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _softmax_grad(t, g):
    y, axis = t.data, t.attrs["axis"]
    return (y * (g - np.sum(y * g, axis=axis, keepdims=True)),)


def _softmax_bind(s, axis):
    # a 0-d tensor is its own softmax axis, as in PyTorch
    return {"axis": shapes.one(axis, len(s)) if s else None}


defop("relu", 1, lambda x: np.maximum(x, 0), lambda t, g: (np.where(t.data > 0, g, 0),), _same,
      "max(x, 0)", "g where x > 0, else 0 (0 at 0)", saves="y")
defop("sigmoid", 1, _sigmoid, lambda t, g: (_times(g, t.data * (1 - t.data), fresh=True),), _same,
      "1 / (1 + e^-x)", "g * s * (1 - s), s the output", saves="y")
defop("tanh", 1, np.tanh, lambda t, g: (_times(g, 1 - t.data * t.data, fresh=True),), _same,
      "tanh x", "g * (1 - tanh² x)", saves="y")
defop("softmax", 1, _softmax, _softmax_grad, lambda s, axis: s,
      "e^x / Σ e^x along axis (max subtracted first)", "s * (g - Σ s * g along axis)",
      attrs=(Attr("axis", "int", -1, "the axis to normalise over"),),
      bind=_softmax_bind, saves="y", flops=lambda i, out, a: 5 * size(out))


# ---- losses -----------------------------------------------------------------------------

def _pair(pred, target):
    if pred != target:
        raise ShapeMismatch(f"pred {pred} and target {target} must have the same shape")
    return ()


def _loss_grads(t, d):
    return (d if t.needs[0] else None, -d if t.needs[1] else None)


defop("mse_loss", 2, lambda p, q: _mean(np.square(p - q)),
      lambda t, g: _loss_grads(t, (_x(t, 0) - _x(t, 1)) * (2 * g / _x(t).size)),
      _pair, "mean((pred - target)²)", "±2 g (pred - target) / n", saves="x", flops=_in_flops)

defop("mae_loss", 2, lambda p, q: _mean(np.abs(p - q)),
      lambda t, g: _loss_grads(t, np.sign(_x(t, 0) - _x(t, 1)) * (g / _x(t).size)),
      _pair, "mean(|pred - target|)", "±g sign(pred - target) / n", saves="x", flops=_in_flops)
