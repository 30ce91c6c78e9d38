"""Reductions over axes: sum, mean, max, min, logsumexp."""

from __future__ import annotations

import math

import numpy as np

from .. import shapes
from ..errors import ShapeMismatch
from ..registry import Attr, defop
from ..shapes import size
from .rules import _broadcast, _data, _fn, _in_flops, _lead, _times, _x, _y

_REDUCE_ATTRS = (
    Attr("axis", "axes", None, "the axes to reduce: an int, a list of ints, or null for all"),
    Attr("keepdims", "bool", False, "keep reduced axes with size 1"),
)


def _reduce_bind(s, axis, keepdims):
    return {"axis": shapes.axes(axis, len(s)), "keepdims": keepdims}


def _reduce_shape(s, axis, keepdims):
    return shapes.reduced(s, axis, keepdims)


def _kept(t, v):
    """A reduction's output (or its gradient, batch axes in front) with the reduced axes
    back as size 1, so that it broadcasts against the input."""
    if t.attrs["keepdims"]:
        return v
    x = t.parents[0]
    return v.reshape(tuple(v.shape[: len(v.shape) - len(t.shape)])
                     + shapes.reduced(x.shape, t.attrs["axis"], True))


def _expand(t, g):
    """Undo a reduction: g back to the input's shape (batch axes in front kept)."""
    return _broadcast(_kept(t, g), _lead(t, g) + t.parents[0].shape)


def _reduce_batch(attrs, shapes_, out, b):
    """Reduce the same axes of each example: past the batch axis (vmap)."""
    axis = attrs["axis"]
    axis = range(len(shapes_[0])) if axis is None else axis
    return {"axis": tuple(a + 1 for a in axis), "keepdims": attrs["keepdims"]}


def _count(shape, axis) -> int:
    """How many elements each output of a reduction over `axis` (normalised) takes in."""
    return size(shape) if axis is None else math.prod(shape[i] for i in axis)


defop("sum", 1, lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
      lambda t, g: (_expand(t, g),), _reduce_shape,
      "Σ x over axis", "g broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops, linear="linear",
      batch=_reduce_batch)


def _mean(x, axis=None, keepdims=False):
    # Σ/n, not np.mean: an empty mean is NaN here without np.mean's Python-level warning
    return np.sum(x, axis=axis, keepdims=keepdims) / _count(np.shape(x), axis)


defop("mean", 1, _mean,
      lambda t, g: (_expand(t, g / _count(t.parents[0].shape, t.attrs["axis"])),),
      _reduce_shape,
      "Σ x / n over axis", "g / n broadcast back over the reduced axes",
      attrs=_REDUCE_ATTRS, bind=_reduce_bind, flops=_in_flops, linear="linear",
      batch=_reduce_batch)


# ---- max, min: the gradient split evenly among tied extremes (PyTorch) ------------------

def _nonempty_shape(name):
    def shape(s, axis, keepdims):
        if _count(s, axis) == 0:
            raise ShapeMismatch(f"{name} of an empty axis of shape {s} has no value")
        return shapes.reduced(s, axis, keepdims)
    return shape


def _extreme_grad(t, g):
    x, y = _data(_x(t, g)), _data(_y(t, g))
    hit = x == _kept(t, y)
    share = hit / hit.sum(axis=t.attrs["axis"], keepdims=True, dtype=x.dtype)
    return (_times(_expand(t, g), share.astype(x.dtype, copy=False), fresh=True),)


for _name, _fn_np, _word in (("max", np.max, "largest"), ("min", np.min, "smallest")):
    defop(_name, 1, lambda x, axis, keepdims, f=_fn_np: f(x, axis=axis, keepdims=keepdims),
          _extreme_grad, _nonempty_shape(_name), f"the {_word} x over axis",
          "g to the elements that attain it, split evenly among ties", attrs=_REDUCE_ATTRS,
          bind=_reduce_bind, saves="xy", flops=_in_flops, batch=_reduce_batch)


# ---- logsumexp --------------------------------------------------------------------------

def _shift(x, axis):
    """max(x) along axis (kept), 0 where it is not finite: x - shift never overflows and an
    all -Infinity row stays -Infinity instead of NaN."""
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    if m.ndim and not np.isfinite(m).all():
        m = np.where(np.isfinite(m), m, 0)
    elif not m.ndim and not np.isfinite(m):
        m = np.zeros_like(m)
    return m


def _logsumexp(x, axis=None, keepdims=False):
    m = _shift(x, axis)
    e = np.subtract(x, m)
    e = np.exp(e, out=e) if isinstance(e, np.ndarray) else np.exp(e)  # 0-d: a NumPy scalar
    s = np.log(np.sum(e, axis=axis, keepdims=True)) + m
    return s if keepdims else s.reshape(shapes.reduced(np.shape(x), axis, False))


_exp = _fn(np.exp, "exp")


defop("logsumexp", 1, _logsumexp,
      lambda t, g: (_times(_expand(t, g), _exp(_x(t, g) - _kept(t, _y(t, g))), fresh=True),),
      _reduce_shape, "ln Σ e^x over axis (the max subtracted first)",
      "g * e^(x - logsumexp x): softmax along axis", attrs=_REDUCE_ATTRS, bind=_reduce_bind,
      saves="xy", flops=lambda i, out, a: 3 * size(i[0]), batch=_reduce_batch)
