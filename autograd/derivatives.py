"""Forward mode, reverse over reverse, and Jacobians, all from the one rule per op.

Each op defines one derivative rule, its VJP (ops.py). Everything else is
derived from it, without a second rule to keep in step:

- **JVP (forward mode).** A VJP rule is linear in `g`; its transpose is the
  JVP. `push_forward` runs the rule once with `g` a symbol (a Tensor without
  data) and the operands as constants, which records the linear map
  g -> (J_i^T g)_i as a small graph of registry ops; a reverse sweep over that
  graph, seeded with the tangents, is its transpose: Σ_i J_i ẋ_i. The
  constants (cos x, s(1 - s), ...) are computed once, the linear part costs
  what the VJP costs: a JVP costs about a forward pass more (JAX's linearize
  and transpose, done one op at a time).
- **HVP (reverse over reverse).** The rules run traced (g a Tensor), so the
  gradient is itself a graph over the forward values; sweeping that graph
  back, seeded with the tangents, gives Σ_j ∂²(seed·of)/∂i∂j v_j (HIPS
  autograd's design: the same rule on arrays for first order and on traced
  values for second).
- **Batches of directions** ride in leading axes of the gradients and
  tangents (`lead`): one sweep for k directions, not k sweeps.
- **Jacobians** are k = size(of) cotangents in one reverse sweep, or
  k = size(wrt) tangents in one forward sweep, whichever is fewer.

Why this design rather than JAX's JVP-plus-transpose: v1's rules are VJPs in
the seed's form, and its first-order path stays the same tight loop over
arrays; only the new derivatives pay for tracing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import DeadlineExceeded
from .shapes import unbroadcast
from .tensor import Tensor, backprop, toposort


def _requires_grad(t: Tensor) -> bool:
    return t.requires_grad


def _symbol(shape, dtype, requires_grad: bool = True) -> Tensor:
    return Tensor._node(None, (), {}, (), tuple(shape), dtype, requires_grad=requires_grad)


def push_forward(t: Tensor, tangents: Sequence, lead: tuple = ()):
    """The tangent of `t` given its parents' tangents (None for zero), with `lead` batch axes
    in front; None when every tangent is zero."""
    needs = tuple(x is not None for x in tangents)
    if not any(needs):
        return None
    if t.op.linear and not lead:
        return _apply_to_tangents(t, tangents)
    if t.op.symmetric or not t.shape:
        # as `t`, asking the rule for the parents that have a tangent
        same = Tensor._node(t.op, t.parents, t.attrs, needs, t.shape, t.dtype, data=t.data,
                            requires_grad=False)
        if t.op.symmetric:  # J = Jᵀ: the rule itself, on the tangent
            return t.op.grad(same, tangents[0])[0]
        return _inner(same, tangents, lead)  # one output: Σ_i <∇_i, ẋ_i>
    # The operands as constants that hold the data: only g is traced.
    parents = tuple(Tensor._node(None, (), {}, (), p.shape, p.dtype, data=p.data)
                    for p in t.parents)
    stand = Tensor._node(t.op, parents, t.attrs, needs, t.shape, t.dtype, data=t.data,
                         requires_grad=False)
    g = _symbol(t.shape, t.dtype)
    seeds: dict[Tensor, object] = {}
    for p, x, r in zip(t.parents, tangents, t.op.grad(stand, g), strict=True):
        if x is None:
            continue
        if r.shape != p.shape:
            r = unbroadcast(r, p.shape)
        seeds[r] = seeds[r] + x if r in seeds else x
    grads = backprop(toposort(seeds, _requires_grad), seeds, lead=lead)
    return grads.get(g)


def _apply_to_tangents(t: Tensor, tangents: Sequence):
    """A linear op's tangent is the op of the tangents; a bilinear op's (x @ y, x * y) is
    op(ẋ, y) + op(x, ẏ) (JAX's deflinear and defbilinear). Constants' tangents are zero.
    Only without batch axes: the forward does not know they are there."""
    f = t.op.bind_forward(t.attrs)
    if t.op.linear == "linear":
        if all(x is not None for x in tangents):
            return f(*tangents)
        if len(tangents) == 1:
            return None
        # x + c, c - x: the constant's tangent is zero; only add and sub are binary linear ops
        x = f(*[np.zeros(p.shape, p.dtype) if v is None else v
                for p, v in zip(t.parents, tangents, strict=True)])
        return x
    x, y = t.parents
    dx, dy = tangents
    out = None if dx is None else f(dx, y.data)
    if dy is not None:
        out = f(x.data, dy) if out is None else out + f(x.data, dy)
    return out


def _inner(t: Tensor, tangents: Sequence, lead: tuple):
    """The tangent of a 0-d result: each parent's gradient (the rule at g = 1) against its
    tangent, summed over the parent's axes (batch axes in front kept)."""
    grads = t.op.grad(t, np.ones((), t.dtype))
    out = None
    for p, x, gi in zip(t.parents, tangents, grads, strict=True):
        if x is None:
            continue
        gi = np.broadcast_to(gi, p.shape) if np.shape(gi) != p.shape else gi
        term = np.tensordot(x, gi, axes=len(p.shape)) if lead else np.vdot(gi, x)
        out = term if out is None else out + term
    return np.asarray(out, t.dtype)


def forward_sweep(steps: Sequence, tangents: Mapping[Tensor, np.ndarray], lead: tuple = (),
                  deadline: float | None = None) -> dict[Tensor, np.ndarray]:
    """Tangents of every step's tensor from the leaves' `tangents`; forward data present."""
    out = dict(tangents)
    clock = time.monotonic
    for t in steps:
        parents = [out.get(p) for p in t.parents]
        if not any(x is not None for x in parents):
            continue
        if deadline is not None and clock() > deadline:
            raise DeadlineExceeded("the evaluation ran past its deadline and was stopped")
        x = push_forward(t, parents, lead)
        if x is not None:
            out[t] = x
    return out


def hessian_vector(path: Sequence[Tensor], of: Tensor, seed: np.ndarray,
                   tangents: Mapping[Tensor, np.ndarray], lead: tuple = (),
                   deadline: float | None = None) -> dict[Tensor, np.ndarray]:
    """Σ_j ∂²(seed · of)/∂i ∂j · tangents[j] for every i the graph reaches back to.

    First the gradient wrt the tangents' tensors, traced (a graph over the forward
    values); then a reverse sweep over that graph seeded with the tangents."""
    first = backprop(path, {of: Tensor(seed, dtype=of.dtype)}, deadline=deadline)
    roots = {}
    for j, v in tangents.items():
        gj = first.get(j)
        if gj is not None and gj.requires_grad:
            roots[gj] = roots[gj] + v if gj in roots else v
    if not roots:
        return {}
    return backprop(toposort(roots, _requires_grad), roots, lead=lead, deadline=deadline)


def identity(shape, dtype) -> np.ndarray:
    """size(shape) directions, one per element: shape (n, *shape)."""
    n = int(np.prod(shape, dtype=np.int64))
    return np.eye(n, dtype=dtype).reshape((n, *shape))
