"""Module-level functions with the seed's names, one per registry op: `exp(x)`, `mse_loss(p, t)`."""

from .ops import FUNCTIONS

__all__ = sorted(FUNCTIONS)
globals().update(FUNCTIONS)
