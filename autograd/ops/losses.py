"""Losses: a scalar from predictions (or logits) and targets of one shape."""

from __future__ import annotations

import numpy as np

from .. import shapes
from ..errors import ShapeMismatch
from ..registry import Attr, defop
from ..shapes import size
from .elementwise import _exp, _log_softmax, _sig
from .reductions import _mean
from .rules import _data, _fn, _in_flops, _lead, _times, _x


def _pair(pred, target, **_):
    if pred != target:
        raise ShapeMismatch(f"pred {pred} and target {target} must have the same shape")
    return ()


def _loss_grads(t, d):
    return (d if t.needs[0] else None, -d if t.needs[1] else None)


def _per_element(t, g, n=None):
    """A loss's scalar g (with any batch axes) divided by n (default: every element),
    shaped to broadcast against the operands."""
    shape = t.parents[0].shape
    return (g / (size(shape) if n is None else n)).reshape(_lead(t, g) + (1,) * len(shape))


def _loss_batch(kind: str, shapes_):
    """mean over each example's elements of (pred - target)² or |pred - target| (vmap)."""
    square = ("mul", [("step", 0), ("step", 0)], {}) if kind == "square" else (
        "abs", [("step", 0)], {})
    return [("sub", [0, 1], {}), square,
            ("mean", [("step", 1)], {"axis": tuple(range(1, len(shapes_[0]) + 1))})]


defop("mse_loss", 2, lambda p, q: _mean(np.square(p - q)),
      lambda t, g: _loss_grads(t, (_x(t, g, 0) - _x(t, g, 1)) * (2 * _per_element(t, g))),
      _pair, "mean((pred - target)²)", "±2 g (pred - target) / n", saves="x", flops=_in_flops,
      batch=lambda attrs, shapes_, out, b: _loss_batch("square", shapes_))

defop("mae_loss", 2, lambda p, q: _mean(np.abs(p - q)),
      lambda t, g: _loss_grads(t, _times(_per_element(t, g),
                                         np.sign(_data(_x(t, g, 0)) - _data(_x(t, g, 1))))),
      _pair, "mean(|pred - target|)", "±g sign(pred - target) / n", saves="x", flops=_in_flops,
      batch=lambda attrs, shapes_, out, b: _loss_batch("abs", shapes_))


# ---- from logits ------------------------------------------------------------------------

def _rows(shape, axis) -> int:
    """How many class vectors cross_entropy averages over."""
    return size(shape) // shape[axis] if shape[axis] else size(shape[:axis] + shape[axis + 1:])


def _cross_entropy(x, p, axis):
    n = _rows(np.shape(x), axis)
    return np.asarray(-np.sum(p * _log_softmax(x, axis)) / n)


_log_softmax_op = _fn(_log_softmax, "log_softmax")


def _cross_entropy_grad(t, g):
    x, p, axis = _x(t, g, 0), _x(t, g, 1), t.attrs["axis"]
    gn = _per_element(t, g, _rows(t.parents[0].shape, axis))
    ls = _log_softmax_op(x, axis=axis)
    gx = gn * (_exp(ls) * p.sum(axis=axis, keepdims=True) - p) if t.needs[0] else None
    return (gx, -gn * ls if t.needs[1] else None)


def _cross_entropy_batch(attrs, shapes_, out, b):
    """vmap: each example's mean of -Σ target * log_softmax, past the batch axis."""
    s, axis = shapes_[0], attrs["axis"]
    rest = tuple(range(1, len(s)))  # the other axes of each example, the class axis gone
    return [("broadcast_to", [0], {"shape": (b, *s)}), ("broadcast_to", [1], {"shape": (b, *s)}),
            ("log_softmax", [("step", 0)], {"axis": axis + 1}),
            ("mul", [("step", 1), ("step", 2)], {}),
            ("sum", [("step", 3)], {"axis": (axis + 1,)}),
            ("mean", [("step", 4)], {"axis": rest}), ("neg", [("step", 5)], {})]


def _class_axis(s, target, axis):
    return {"axis": shapes.one(axis, len(s))}


defop("cross_entropy", 2, _cross_entropy, _cross_entropy_grad, _pair,
      "mean over the other axes of -Σ target * log_softmax(logits) along axis",
      "g / n (softmax(x) Σ t - t) to the logits, -g / n log_softmax(x) to the target",
      attrs=(Attr("axis", "int", -1, "the class axis"),), bind=_class_axis, saves="x",
      flops=lambda i, out, a: 6 * size(i[0]), batch=_cross_entropy_batch)


def _bce(x, z):
    # logaddexp(0, x) is max(x, 0) + ln(1 + e^-|x|), without overflow
    return _mean(np.logaddexp(0, x) - x * z)


def _bce_grad(t, g):
    x, z = _x(t, g, 0), _x(t, g, 1)
    gn = _per_element(t, g)
    return (gn * (_sig(x) - z) if t.needs[0] else None, -gn * x if t.needs[1] else None)


defop("binary_cross_entropy_with_logits", 2, _bce, _bce_grad, _pair,
      "mean of max(x, 0) - x t + ln(1 + e^-|x|) (stable)",
      "g / n (sigmoid(x) - t) to the logits, -g x / n to the targets", saves="x",
      flops=lambda i, out, a: 5 * size(i[0]), batch=lambda attrs, shapes_, out, b: [
          ("softplus", [0], {}), ("mul", [0, 1], {}), ("sub", [("step", 0), ("step", 1)], {}),
          ("broadcast_to", [("step", 2)], {"shape": (b, *shapes_[0])}),
          ("mean", [("step", 3)], {"axis": tuple(range(1, len(shapes_[0]) + 1))})])
