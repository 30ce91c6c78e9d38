"""Every op of PROTOCOL.md §2, each defined once: forward, derivative rule, shape.

Derivative rules take the seed's signature ``(t, g) -> tuple``: `t` is the
op's output tensor (its `.parents`, `.attrs` and `.needs`, which says which
parents want a gradient) and `g` the incoming gradient. A rule may return None
for a parent that needs none, and a gradient of the broadcast shape: the engine
reduces it to the parent's shape (shapes.unbroadcast) and checks the length.

Each rule is written once and runs in two ways (HIPS autograd's design):
- on arrays, the fast first-order path: `_x(t, g)` is the parent's array and
  the arithmetic is NumPy's;
- traced, when `g` is a Tensor: `_x(t, g)` is the parent Tensor itself, so the
  rule's own arithmetic builds registry nodes that can be differentiated again
  (Hessian-vector products), or transposed (forward mode, see derivatives.py).
So a rule is written with operators, Tensor/ndarray methods both have
(`.sum(axis=, keepdims=)`, `.reshape`, `.transpose`), and the dual functions
below; what is piecewise constant (a sign, a mask) is an array either way.

`g` may carry leading batch axes beyond `t`'s shape (several cotangents or
tangents at once): rules index axes from the end and keep those in front.
"""

from __future__ import annotations

import math

import numpy as np

from . import shapes
from .errors import ShapeMismatch
from .registry import Attr, defop, install
from .shapes import size
from .tensor import Tensor, apply

# ---- how a rule reads its operands, on arrays or traced ---------------------------------

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


def _broadcast(g, shape):
    """g broadcast up to `shape`: the broadcast_to op when traced."""
    if g.__class__ is Tensor:
        return apply(OPS_BROADCAST, g, shape=shape)
    return shapes.expand(g, shape)


def _fn(numpy_fn, op_name):
    """A function that is `numpy_fn` on arrays and the registry op `op_name` on Tensors."""
    def fn(x):
        return apply(_op(op_name), x) if x.__class__ is Tensor else numpy_fn(x)
    return fn


def _op(name):
    from .registry import OPS
    return OPS[name]


_cos, _sin = _fn(np.cos, "cos"), _fn(np.sin, "sin")


def _same(s, **_):
    return s


def _in_flops(in_shapes, out, attrs):
    return sum(size(s) for s in in_shapes)


def _zero_flops(*_):
    return 0


# ---- arithmetic -------------------------------------------------------------------------

defop("add", 2, np.add, lambda t, g: (g, g), shapes.broadcast,
      "x + y", "g, g", numbers=(0, 1), operator="+", linear="linear")

defop("sub", 2, np.subtract, lambda t, g: (g, -g if t.needs[1] else None), shapes.broadcast,
      "x - y", "g, -g", numbers=(0, 1), operator="-", linear="linear")

defop("mul", 2, np.multiply,
      lambda t, g: (_times(g, _x(t, g, 1)) if t.needs[0] else None,
                    _times(g, _x(t, g, 0)) if t.needs[1] else None),
      shapes.broadcast, "x * y", "g * y, g * x", numbers=(0, 1), saves="x", operator="*",
      linear="bilinear")


def _div_grad(t, g):
    x, y = _x(t, g, 0), _x(t, g, 1)
    gy = g / y
    return (gy if t.needs[0] else None, -gy * x / y if t.needs[1] else None)


defop("div", 2, np.divide, _div_grad, shapes.broadcast,
      "x / y (a zero divisor gives ±Infinity or NaN)", "g / y, -g x / y²",
      numbers=(0, 1), saves="x", operator="/")


def _mT(a):
    """The last two axes swapped (the seed's `.T` reverses every axis)."""
    n = len(a.shape)
    return a.transpose((*range(n - 2), n - 1, n - 2))


def _matmul_flops(in_shapes, out, attrs):
    return 2 * size(out) * in_shapes[0][-1]


defop("matmul", 2, np.matmul,
      lambda t, g: (g @ _mT(_x(t, g, 1)) if t.needs[0] else None,
                    _mT(_x(t, g, 0)) @ g if t.needs[1] else None),
      shapes.matmul, "x @ y (batch dimensions broadcast)", "g @ swap(y), swap(x) @ g, summed "
      "over broadcast batch dimensions", saves="x", flops=_matmul_flops, operator="@",
      linear="bilinear")


def _pow_grad(t, g):
    n = t.attrs["exponent"]
    if n == 0:  # d/dx x**0 is 0 everywhere, also at x = 0 where n * x**-1 is nan
        return (g * 0.0 if g.__class__ is Tensor else np.zeros_like(g),)
    x = _x(t, g)
    return (_times(g, n * x ** (n - 1) if n != 2 else 2 * x, fresh=True),)


defop("pow", 1, lambda x, exponent: x ** exponent, _pow_grad, _same,
      "x ** exponent", "g * exponent * x ** (exponent - 1)", saves="x", operator="**",
      symmetric=True,
      attrs=(Attr("exponent", "number", doc="the power, a number"),))

defop("neg", 1, np.negative, lambda t, g: (-g,), _same, "-x", "-g", operator="-x",
      linear="linear")

defop("abs", 1, np.abs, lambda t, g: (_times(g, np.sign(_data(_x(t, g))), fresh=True),), _same,
      "|x|", "g * sign(x), 0 at 0", saves="x", symmetric=True)


# ---- shape ------------------------------------------------------------------------------

def _transpose_bind(s, axes):
    return {"axes": shapes.permutation(axes, len(s))}


def _inverse(perm):
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


def _transpose_grad(t, g):
    n = len(_lead(t, g))
    return (g.transpose((*range(n), *(n + a for a in _inverse(t.attrs["axes"])))),)


defop("transpose", 1, lambda x, axes: np.transpose(x, axes), _transpose_grad,
      lambda s, axes: tuple(s[i] for i in axes),
      "x with its axes permuted (default: all reversed, x.T)", "g with the inverse permutation",
      attrs=(Attr("axes", "perm", None, "a permutation of the dimensions; null reverses them"),),
      bind=_transpose_bind, flops=_zero_flops, linear="linear")

defop("reshape", 1, lambda x, shape: np.reshape(x, shape),
      lambda t, g: (g.reshape(_lead(t, g) + t.parents[0].shape),),
      lambda s, shape: shape,
      "x with a new shape of as many elements", "g reshaped to x's shape",
      attrs=(Attr("shape", "shape", doc="the new shape; one dimension may be -1"),),
      bind=lambda s, shape: {"shape": shapes.reshape(s, shape)}, flops=_zero_flops,
      linear="linear")


def _broadcast_shape(s, shape):
    try:
        out = shapes.broadcast(s, tuple(shape))
    except ShapeMismatch:
        out = None
    if out != tuple(shape):
        raise ShapeMismatch(f"shape {s} cannot be broadcast to {list(shape)}")
    return out


OPS_BROADCAST = defop(
    "broadcast_to", 1, lambda x, shape: np.broadcast_to(x, shape), lambda t, g: (g,),
    _broadcast_shape, "x repeated along new or size-1 axes up to shape (NumPy broadcasting)",
    "g summed over the broadcast axes",
    attrs=(Attr("shape", "shape", doc="the shape to broadcast to"),), flops=_zero_flops,
    linear="linear")


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
    """Undo a reduction: g back to the input's shape (batch axes in front kept)."""
    x, lead = t.parents[0], _lead(t, g)
    if not t.attrs["keepdims"]:
        g = g.reshape(lead + shapes.reduced(x.shape, t.attrs["axis"], True))
    return _broadcast(g, lead + x.shape)


def _count(shape, axis) -> int:
    """How many elements each output of a reduction over `axis` (normalised) takes in."""
    return size(shape) if axis is None else math.prod(shape[i] for i in axis)


defop("sum", 1, lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
      lambda t, g: (_expand(t, g),), _reduce_shape,
      "Σ x over axis", "g broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops, linear="linear")


def _mean(x, axis=None, keepdims=False):
    # Σ/n, not np.mean: an empty mean is NaN here without np.mean's Python-level warning
    return np.sum(x, axis=axis, keepdims=keepdims) / _count(np.shape(x), axis)


defop("mean", 1, _mean,
      lambda t, g: (_expand(t, g / _count(t.parents[0].shape, t.attrs["axis"])),),
      _reduce_shape,
      "Σ x / n over axis", "g / n broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops, linear="linear")


# ---- elementwise math -------------------------------------------------------------------

defop("exp", 1, np.exp, lambda t, g: (_times(g, _y(t, g)),), _same, "e^x", "g * e^x",
      saves="y", symmetric=True)
defop("log", 1, np.log, lambda t, g: (g / _x(t, g),), _same, "ln x", "g / x", saves="x",
      symmetric=True)
defop("sqrt", 1, np.sqrt, lambda t, g: (g / (2 * _y(t, g)),), _same,
      "√x", "g / (2 √x)", saves="y", symmetric=True)
defop("sin", 1, np.sin, lambda t, g: (_times(g, _cos(_x(t, g)), fresh=True),), _same,
      "sin x", "g * cos x", saves="x", symmetric=True)
defop("cos", 1, np.cos, lambda t, g: (_times(g, -_sin(_x(t, g)), fresh=True),), _same,
      "cos x", "-g * sin x", saves="x", symmetric=True)
defop("tan", 1, np.tan, lambda t, g: (_times(g, _cos(_x(t, g)) ** -2, fresh=True),), _same,
      "tan x", "g * sec² x", saves="x", symmetric=True)


# ---- activations ------------------------------------------------------------------------

def _sigmoid(x):
    # exp of -|x| only: never overflows, keeps tiny values for large negative x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _softmax_grad(t, g):
    y, axis = _y(t, g), t.attrs["axis"]
    # from the end, batch axes in front; a 0-d tensor is its own axis: sum over none
    axis = () if axis is None else axis - len(t.shape)
    return (y * (g - (y * g).sum(axis=axis, keepdims=True)),)


def _softmax_bind(s, axis):
    # a 0-d tensor is its own softmax axis, as in PyTorch
    return {"axis": shapes.one(axis, len(s)) if s else None}


def _sigmoid_grad(t, g):
    y = _y(t, g)
    return (_times(g, y * (1 - y), fresh=True),)


def _tanh_grad(t, g):
    y = _y(t, g)
    return (_times(g, 1 - y * y, fresh=True),)


defop("relu", 1, lambda x: np.maximum(x, 0),
      lambda t, g: (_times(g, (_data(_y(t, g)) > 0).astype(t.dtype), fresh=True),), _same,
      "max(x, 0)", "g where x > 0, else 0 (0 at 0)", saves="y", symmetric=True)
defop("sigmoid", 1, _sigmoid, _sigmoid_grad, _same,
      "1 / (1 + e^-x)", "g * s * (1 - s), s the output", saves="y", symmetric=True)
defop("tanh", 1, np.tanh, _tanh_grad, _same, "tanh x", "g * (1 - tanh² x)", saves="y",
      symmetric=True)
defop("softmax", 1, _softmax, _softmax_grad, lambda s, axis: s,
      "e^x / Σ e^x along axis (max subtracted first)", "s * (g - Σ s * g along axis)",
      attrs=(Attr("axis", "int", -1, "the axis to normalise over"),),
      bind=_softmax_bind, saves="y", flops=lambda i, out, a: 5 * size(out), symmetric=True)


# ---- losses -----------------------------------------------------------------------------

def _pair(pred, target):
    if pred != target:
        raise ShapeMismatch(f"pred {pred} and target {target} must have the same shape")
    return ()


def _loss_grads(t, d):
    return (d if t.needs[0] else None, -d if t.needs[1] else None)


def _per_element(t, g):
    """A loss's scalar g (with any batch axes) divided by n, shaped to broadcast against
    the operands."""
    shape = t.parents[0].shape
    return (g / size(shape)).reshape(_lead(t, g) + (1,) * len(shape))


defop("mse_loss", 2, lambda p, q: _mean(np.square(p - q)),
      lambda t, g: _loss_grads(t, (_x(t, g, 0) - _x(t, g, 1)) * (2 * _per_element(t, g))),
      _pair, "mean((pred - target)²)", "±2 g (pred - target) / n", saves="x", flops=_in_flops)

defop("mae_loss", 2, lambda p, q: _mean(np.abs(p - q)),
      lambda t, g: _loss_grads(t, _times(_per_element(t, g),
                                         np.sign(_data(_x(t, g, 0)) - _data(_x(t, g, 1))))),
      _pair, "mean(|pred - target|)", "±g sign(pred - target) / n", saves="x", flops=_in_flops)


# Every op a method (`x.exp()`, `x.sum(0)`), and the Python operators as the ops declare.
FUNCTIONS = install(Tensor, apply)
