"""Module functions with the seed's names, one per registry op: `exp(x)`, `mse_loss(p, t)`.

    from client import ops
    loss = ops.mse_loss(ops.tanh(x @ w), y)

They are the same functions as the Node methods (`ops.exp(x)` is `x.exp()`),
generated from the registry in client/graph.py.
"""

from __future__ import annotations

from .graph import FUNCTIONS

__all__ = sorted(FUNCTIONS)
globals().update(FUNCTIONS)
