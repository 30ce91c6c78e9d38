"""Elementwise math and activations, and the normalisers along one axis (softmax)."""

from __future__ import annotations

import numpy as np

from .. import shapes
from ..registry import Attr, defop
from ..shapes import size
from .reductions import _shift
from .rules import _data, _fn, _same, _times, _x, _y

_cos, _sin, _exp = _fn(np.cos, "cos"), _fn(np.sin, "sin"), _fn(np.exp, "exp")
_expm1 = _fn(np.expm1, "expm1")

# ---- math -------------------------------------------------------------------------------

# an elementwise op's Jacobian is diagonal, so symmetric: forward mode may run the rule
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
defop("log1p", 1, np.log1p, lambda t, g: (g / (1 + _x(t, g)),), _same,
      "ln(1 + x), exact for small x", "g / (1 + x)", saves="x", symmetric=True)
defop("expm1", 1, np.expm1, lambda t, g: (_times(g, _y(t, g) + 1, fresh=True),), _same,
      "e^x - 1, exact for small x", "g * e^x", saves="y", symmetric=True)


# ---- activations ------------------------------------------------------------------------

def _sigmoid(x):
    # exp of -|x| only: never overflows, keeps tiny values for large negative x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


_sig = _fn(_sigmoid, "sigmoid")


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

# logaddexp(0, x) = max(x, 0) + ln(1 + e^-|x|): finite for any finite x. The gradients
# read the output: sigmoid(x) = e^(x - softplus x), x - softplus x <= 0 so it never
# overflows; 1 - sigmoid(x) = -expm1(log_sigmoid x), exact where sigmoid(x) is near 1.
defop("softplus", 1, lambda x: np.logaddexp(0, x),
      lambda t, g: (_times(g, _exp(_x(t, g) - _y(t, g)), fresh=True),), _same,
      "ln(1 + e^x), stable for large |x|", "g * sigmoid(x) = g e^(x - softplus x)",
      saves="xy", symmetric=True)
defop("log_sigmoid", 1, lambda x: -np.logaddexp(0, -x),
      lambda t, g: (_times(g, -_expm1(_y(t, g)), fresh=True),), _same,
      "ln sigmoid(x) = -softplus(-x), stable for large |x|",
      "g * sigmoid(-x) = -g expm1(log_sigmoid x)", saves="y", symmetric=True)


# ---- along one axis: softmax, log_softmax -----------------------------------------------

def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _from_end(t, axis):
    """The op's axis counted from the end, so batch axes in front of g are left alone; a 0-d
    tensor (axis None) normalises over no axis."""
    return () if axis is None else axis - len(t.shape)


def _softmax_grad(t, g):
    y, axis = _y(t, g), _from_end(t, t.attrs["axis"])
    return (y * (g - (y * g).sum(axis=axis, keepdims=True)),)


def _softmax_bind(s, axis):
    # a 0-d tensor is its own softmax axis, as in PyTorch
    return {"axis": shapes.one(axis, len(s)) if s else None}


def _normaliser_batch(name):
    """softmax or log_softmax past the batch axis (vmap)."""
    def batch(attrs, shapes_, out, b):
        if attrs["axis"] is not None:
            return {"axis": attrs["axis"] + 1}
        # each example a 0-d tensor, its own axis: (B,) -> (B, 1) -> op -> (B,)
        return [("reshape", [0], {"shape": (b, 1)}), (name, [("step", 0)], {"axis": 1}),
                ("reshape", [("step", 1)], {"shape": (b,)})]
    return batch


_AXIS = (Attr("axis", "int", -1, "the axis to normalise over"),)

defop("softmax", 1, _softmax, _softmax_grad, lambda s, axis: s,
      "e^x / Σ e^x along axis (max subtracted first)", "s * (g - Σ s * g along axis)",
      attrs=_AXIS, bind=_softmax_bind, saves="y", flops=lambda i, out, a: 5 * size(out),
      symmetric=True, batch=_normaliser_batch("softmax"))


def _log_softmax(x, axis):
    s = np.subtract(x, _shift(x, axis))
    s -= np.log(np.sum(np.exp(s), axis=axis, keepdims=True))
    return s


def _log_softmax_grad(t, g):
    y, axis = _y(t, g), _from_end(t, t.attrs["axis"])
    return (g - _times(g.sum(axis=axis, keepdims=True), _exp(y), fresh=True),)


defop("log_softmax", 1, _log_softmax, _log_softmax_grad, lambda s, axis: s,
      "x - logsumexp(x) along axis (stable)", "g - e^y Σ g along axis, y the output",
      attrs=_AXIS, bind=_softmax_bind, saves="y", flops=lambda i, out, a: 4 * size(out),
      batch=_normaliser_batch("log_softmax"))
