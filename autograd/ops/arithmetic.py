"""Arithmetic: + - * / @ **, and the elementwise choices (maximum, where, clip, ...)."""

from __future__ import annotations

import numpy as np

from .. import shapes
from ..errors import ShapeMismatch
from ..registry import Attr, defop
from ..shapes import size
from .rules import _data, _same, _times, _where, _x, _y, _zero

# ---- + - * / ----------------------------------------------------------------------------

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


# ---- matmul and powers ------------------------------------------------------------------

def _mT(a):
    """The last two axes swapped (the seed's `.T` reverses every axis)."""
    n = len(a.shape)
    return a.transpose((*range(n - 2), n - 1, n - 2))


def _matmul_flops(in_shapes, out, attrs):
    return 2 * size(out) * in_shapes[0][-1]


def _mm(a, b):
    """a @ b; on arrays an outer product (contracting one element) is a broadcast multiply:
    NumPy's matmul falls back to a slow loop for the strided column it then sees (per-example
    gradients of a row under vmap are such products)."""
    if a.__class__ is np.ndarray and a.shape[-1] == 1 and b.__class__ is np.ndarray:
        return a * b
    return a @ b


defop("matmul", 2, np.matmul,
      lambda t, g: (_mm(g, _mT(_x(t, g, 1))) if t.needs[0] else None,
                    _mm(_mT(_x(t, g, 0)), g) if t.needs[1] else None),
      shapes.matmul, "x @ y (batch dimensions broadcast)", "g @ swap(y), swap(x) @ g, summed "
      "over broadcast batch dimensions", saves="x", flops=_matmul_flops, operator="@",
      linear="bilinear")


def _pow_grad(t, g):
    n = t.attrs["exponent"]
    if n == 0:  # d/dx x**0 is 0 everywhere, also at x = 0 where n * x**-1 is nan
        return (_zero(g),)
    x = _x(t, g)
    return (_times(g, n * x ** (n - 1) if n != 2 else 2 * x, fresh=True),)


defop("pow", 1, lambda x, exponent: x ** exponent, _pow_grad, _same,
      "x ** exponent", "g * exponent * x ** (exponent - 1)", saves="x", operator="**",
      symmetric=True, attrs=(Attr("exponent", "number", doc="the power, a number"),))

defop("neg", 1, np.negative, lambda t, g: (-g,), _same, "-x", "-g", operator="-x",
      linear="linear")

defop("abs", 1, np.abs, lambda t, g: (_times(g, np.sign(_data(_x(t, g))), fresh=True),), _same,
      "|x|", "g * sign(x), 0 at 0", saves="x", symmetric=True)

defop("square", 1, np.square, lambda t, g: (_times(g, 2 * _x(t, g), fresh=True),), _same,
      "x²", "2 g x", saves="x", symmetric=True)


# ---- choices: maximum, minimum, comparisons, where, clip --------------------------------

def _choice_grad(t, g, at_least, above):
    """Gradients of an elementwise choice between x and y. x's share is 1 where it was
    chosen, ½ at a tie (PyTorch), 0 where y was: (x >= y) + (x > y), halved, for maximum;
    written so, one pass each, with no promotion of the dtype."""
    x, y = _data(_x(t, g, 0)), _data(_x(t, g, 1))
    share = np.add(at_least(x, y), above(x, y), dtype=t.dtype)
    share *= 0.5
    return (_times(g, share) if t.needs[0] else None,
            _times(g, 1 - share) if t.needs[1] else None)


def _maximum_grad(t, g):
    return _choice_grad(t, g, np.greater_equal, np.greater)


def _minimum_grad(t, g):
    return _choice_grad(t, g, np.less_equal, np.less)


defop("maximum", 2, np.maximum, _maximum_grad, shapes.broadcast, "max(x, y) elementwise",
      "g where x > y, g / 2 at ties; the rest to y", numbers=(0, 1), saves="x")
defop("minimum", 2, np.minimum, _minimum_grad, shapes.broadcast, "min(x, y) elementwise",
      "g where x < y, g / 2 at ties; the rest to y", numbers=(0, 1), saves="x")


def _comparison(ufunc):
    def forward(x, y):
        return ufunc(x, y).astype(np.result_type(x, y))
    return forward


def _no_grad(t, g):
    return tuple(_zero(g) if need else None for need in t.needs)


defop("greater", 2, _comparison(np.greater), _no_grad, shapes.broadcast,
      "1 where x > y, else 0", "0 (a step has no gradient)", numbers=(0, 1), operator=">")
defop("less", 2, _comparison(np.less), _no_grad, shapes.broadcast,
      "1 where x < y, else 0", "0 (a step has no gradient)", numbers=(0, 1), operator="<")


def _where_shape(c, x, y):
    try:
        return shapes.broadcast(shapes.broadcast(c, x), y)
    except ShapeMismatch:
        raise ShapeMismatch(f"cond {c}, x {x} and y {y} do not broadcast together") from None


def _where_grad(t, g):
    m = _data(_x(t, g, 0))  # NumPy's where reads any non-zero (NaN too) as true, as cond != 0
    return (_zero(g) if t.needs[0] else None,
            _where(m, g, 0.0) if t.needs[1] else None,
            _where(m, 0.0, g) if t.needs[2] else None)


defop("where", 3, np.where, _where_grad, _where_shape,
      "x where cond != 0, else y (all three broadcast)", "0 to cond; g where cond, to x; "
      "g elsewhere, to y", numbers=(1, 2), saves="x")


def _clip(x, min, max):  # noqa: A002 (the attributes' names)
    if min is not None:
        x = np.maximum(x, min)
    if max is not None:
        x = np.minimum(x, max)
    return x


def _clip_grad(t, g):
    lo, hi = t.attrs["min"], t.attrs["max"]
    if lo is not None and hi is not None and lo > hi:  # everything is max: no x inside
        return (_zero(g),)
    # min <= x <= max exactly where clipping left x as it was (bounds included)
    return (_where(_data(_x(t, g)) == _data(_y(t, g)), g, 0.0),)


defop("clip", 1, _clip, _clip_grad, _same, "x limited to [min, max] (null: no limit)",
      "g where min <= x <= max, else 0", saves="xy", symmetric=True,
      attrs=(Attr("min", "bound", None, "the lower limit, or null for none"),
             Attr("max", "bound", None, "the upper limit, or null for none")))
