"""Every op of PROTOCOL.md §2 and §2.1, each defined once: forward, derivative rule, shape.

By kind: arithmetic.py (+ - * / @ **, maximum, where, clip), shape.py
(transpose, reshape, getitem, take, concat, ...), reductions.py, elementwise.py
(math, activations, softmax), losses.py, einsum.py; rules.py holds what every
rule uses to read its operands.

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
in rules.py; what is piecewise constant (a sign, a mask) is an array either way.

`g` may carry leading batch axes beyond `t`'s shape (several cotangents or
tangents at once): rules index axes from the end and keep those in front.
"""

from __future__ import annotations

from ..registry import install
from ..tensor import Tensor, apply
from . import arithmetic, einsum, elementwise, losses, reductions, shape  # noqa: F401 (registers)

# Every op a method (`x.exp()`, `x.sum(0)`), and the Python operators as the ops declare.
FUNCTIONS = install(Tensor, apply)
