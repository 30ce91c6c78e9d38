"""Shape arithmetic, done on tuples before any array exists.

The planner runs these on every node to infer shapes and costs; the engine
uses `unbroadcast` once, for every rule, to bring a gradient back to its
operand's shape (STYLE.md §2).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BadAttribute, ShapeMismatch

Shape = tuple[int, ...]


def size(shape: Shape) -> int:
    return math.prod(shape)


def extent(shape: Shape) -> int:
    """size() with each 0 counted as 1: an empty (0, 2**62, 4) still cannot exist in NumPy."""
    return math.prod(max(d, 1) for d in shape)


def broadcast(a: Shape, b: Shape) -> Shape:
    """NumPy's broadcasting of two shapes, or ShapeMismatch naming the dimension."""
    if a == b or not b:
        return a
    if not a:
        return b
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for i, (da, db) in enumerate(zip(pa, pb, strict=True)):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeMismatch(
                f"shapes {a} and {b} do not broadcast: {da} != {db} in dimension {i - n}")
    return tuple(out)


def unbroadcast(g, shape: Shape, lead: int = 0):
    """Sum a gradient over the dimensions that broadcasting added or stretched, keeping the
    first `lead` axes (batch axes of several cotangents). Arrays and Tensors alike."""
    full = g.shape
    if full[lead:] == tuple(shape):
        return g
    extra = len(full) - lead - len(shape)
    if extra:  # added in front: summed away (a bias's gradient is one sum, no reshape)
        g = g.sum(axis=tuple(range(lead, lead + extra)))
    stretched = tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


def expand(g, shape: Shape):
    """Broadcast g up to `shape`: a zero-copy view for a large tensor, a copy for a small
    one (np.broadcast_to's own Python overhead, ~8 us, outweighs copying a few KB)."""
    if size(shape) > 4096:
        return np.broadcast_to(g, shape)
    out = np.empty(shape, g.dtype)
    out[...] = g
    return out


def matmul(a: Shape, b: Shape) -> Shape:
    """numpy.matmul's shape for operands of rank >= 2, batch dimensions broadcast."""
    if len(a) < 2 or len(b) < 2:
        raise ShapeMismatch(f"matmul needs operands of rank >= 2, got shapes {a} and {b}")
    if a[-1] != b[-2]:
        raise ShapeMismatch(f"shapes {a} and {b} do not align: {a[-1]} != {b[-2]}")
    try:
        batch = broadcast(a[:-2], b[:-2])
    except ShapeMismatch:
        raise ShapeMismatch(f"batch dimensions of {a} and {b} do not broadcast") from None
    return batch + (a[-2], b[-1])


def axes(axis, ndim: int, name: str = "axis") -> tuple[int, ...] | None:
    """Normalise an axis attribute (None, int or list) to sorted non-negative ints."""
    if axis is None:
        return None
    listed = (axis,) if isinstance(axis, int) else tuple(axis)
    out = tuple(sorted(one(a, ndim, name) for a in listed))
    if len(set(out)) != len(out):
        raise BadAttribute(f"{name} {list(listed)} repeats an axis", path=(name,))
    return out


def one(axis: int, ndim: int, name: str = "axis") -> int:
    """One axis, negative counting from the end, checked against the rank."""
    if not -ndim <= axis < ndim:
        raise BadAttribute(f"{name} {axis} is out of range for rank {ndim}", path=(name,))
    return axis % ndim


def permutation(perm, ndim: int) -> tuple[int, ...]:
    """A transpose's axes: a permutation of the dimensions (None reverses them)."""
    if perm is None:
        return tuple(range(ndim))[::-1]
    out = tuple(one(a, ndim, "axes") for a in perm)
    if sorted(out) != list(range(ndim)):
        raise BadAttribute(f"axes {list(perm)} is not a permutation of {ndim} dimensions",
                           path=("axes",))
    return out


def reshape(shape: Shape, target) -> Shape:
    """numpy.reshape's target with at most one -1 resolved, or ShapeMismatch."""
    target = tuple(target)
    if any(d < -1 for d in target):
        raise BadAttribute(f"shape {list(target)} has a negative dimension", path=("shape",))
    unknown = [i for i, d in enumerate(target) if d == -1]
    if len(unknown) > 1:
        raise BadAttribute(f"shape {list(target)} has more than one -1", path=("shape",))
    n = size(shape)
    if unknown:
        known = size(d for d in target if d != -1)
        if known == 0 or n % known:
            raise ShapeMismatch(f"cannot reshape {shape} ({n} elements) into {list(target)}")
        target = tuple(n // known if d == -1 else d for d in target)
    if size(target) != n:
        raise ShapeMismatch(f"cannot reshape {shape} ({n} elements) into {list(target)}")
    return target


def reduced(shape: Shape, axis: tuple[int, ...] | None, keepdims: bool) -> Shape:
    """The shape after summing over `axis` (normalised)."""
    if axis is None:
        return (1,) * len(shape) if keepdims else ()
    if keepdims:
        return tuple(1 if i in axis else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axis)
