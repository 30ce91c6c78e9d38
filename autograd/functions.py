"""Module-level functions with the seed's names, one per registry op: `exp(x)`, `mse_loss(p, t)`."""

from __future__ import annotations

from .registry import OPS, Op
from .tensor import apply


def _function(op: Op):
    def function(*args, **attrs):
        operands, attrs = op.split_call(args, attrs)
        return apply(op, *operands, **attrs)

    function.__name__ = function.__qualname__ = op.name
    function.__doc__ = f"{op.doc}.  Gradient: {op.grad_doc}."
    return function


__all__ = sorted(OPS)
globals().update({name: _function(op) for name, op in OPS.items()})
