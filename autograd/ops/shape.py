"""Ops that move elements without arithmetic: permute, reshape, broadcast, index, join.

getitem and take have VJPs that are ops of their own (internal: no request
names them), so their gradients can be traced and differentiated again: the
transpose of picking elements is putting them back into zeros (JAX's
slice/pad and gather/scatter-add pairs).
"""

from __future__ import annotations

import numpy as np

from .. import shapes
from ..errors import BadAttribute, ShapeMismatch
from ..registry import Attr, defop
from .rules import _fn, _index, _lead, _zero_flops

# ---- permute, reshape, broadcast --------------------------------------------------------


def _transpose_bind(s, axes):
    return {"axes": shapes.permutation(axes, len(s))}


def _inverse(perm):
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


def _transpose_grad(t, g):
    n = len(_lead(t, g))
    return (g.transpose((*range(n), *(n + a for a in _inverse(t.attrs["axes"])))),)


defop("transpose", 1, lambda x, axes: np.transpose(x, axes), _transpose_grad,
      lambda s, axes: tuple(s[i] for i in axes),
      "x with its axes permuted (default: all reversed, x.T)", "g with the inverse permutation",
      attrs=(Attr("axes", "perm", None, "a permutation of the dimensions; null reverses them"),),
      bind=_transpose_bind, flops=_zero_flops, linear="linear",
      batch=lambda attrs, shapes_, out, b: {"axes": (0, *(a + 1 for a in attrs["axes"]))})


def _unshape(t, g):
    """The gradient of any op that only reshapes: g back to the input's shape."""
    return (g.reshape(_lead(t, g) + t.parents[0].shape),)


defop("reshape", 1, lambda x, shape: np.reshape(x, shape), _unshape,
      lambda s, shape: shape,
      "x with a new shape of as many elements", "g reshaped to x's shape",
      attrs=(Attr("shape", "shape", doc="the new shape; one dimension may be -1"),),
      bind=lambda s, shape: {"shape": shapes.reshape(s, shape)}, flops=_zero_flops,
      linear="linear", batch=lambda attrs, shapes_, out, b: {"shape": (b, *attrs["shape"])})


def _broadcast_shape(s, shape):
    try:
        out = shapes.broadcast(s, tuple(shape))
    except ShapeMismatch:
        out = None
    if out != tuple(shape):
        raise ShapeMismatch(f"shape {s} cannot be broadcast to {list(shape)}")
    return out


defop("broadcast_to", 1, lambda x, shape: np.broadcast_to(x, shape), lambda t, g: (g,),
      _broadcast_shape, "x repeated along new or size-1 axes up to shape (NumPy broadcasting)",
      "g summed over the broadcast axes",
      attrs=(Attr("shape", "shape", doc="the shape to broadcast to"),), flops=_zero_flops,
      linear="linear", batch=lambda attrs, shapes_, out, b: [
          ("reshape", [0], {"shape": (b, *(1,) * (len(out) - len(shapes_[0])), *shapes_[0])}),
          ("broadcast_to", [("step", 0)], {"shape": (b, *out)})])


def _expand_dims_bind(s, axis):
    return {"axis": shapes.one(axis, len(s) + 1)}


defop("expand_dims", 1, lambda x, axis: np.expand_dims(x, axis), _unshape,
      lambda s, axis: s[:axis] + (1,) + s[axis:],
      "x with a new axis of size 1 at axis", "g reshaped to x's shape",
      attrs=(Attr("axis", "int", doc="where the new axis goes, in the output's axes"),),
      bind=_expand_dims_bind, flops=_zero_flops, linear="linear",
      batch=lambda attrs, shapes_, out, b: {"axis": attrs["axis"] + 1})


def _squeeze_bind(s, axis):
    if axis is None:
        return {"axis": tuple(i for i, d in enumerate(s) if d == 1)}
    axis = shapes.axes(axis, len(s))
    for a in axis:
        if s[a] != 1:
            raise BadAttribute(f"cannot squeeze axis {a} of size {s[a]}: only size 1",
                               path=("axis",))
    return {"axis": axis}


defop("squeeze", 1, lambda x, axis: np.squeeze(x, axis), _unshape,
      lambda s, axis: tuple(d for i, d in enumerate(s) if i not in axis),
      "x without the size-1 axes named (null: all of them)", "g reshaped to x's shape",
      attrs=(Attr("axis", "axes", None, "an axis, a list of axes, or null for every size-1 "
                  "axis"),),
      bind=_squeeze_bind, flops=_zero_flops, linear="linear",
      batch=lambda attrs, shapes_, out, b: {"axis": tuple(a + 1 for a in attrs["axis"])})


# ---- joins ------------------------------------------------------------------------------

def _join_batch(name):
    """vmap: every operand broadcast to (B, *shape) (one may be shared, unbatched), then the
    op past the batch axis."""
    def batch(attrs, shapes_, out, b):
        steps = [("broadcast_to", [k], {"shape": (b, *s)}) for k, s in enumerate(shapes_)]
        return [*steps, (name, [("step", k) for k in range(len(shapes_))],
                         {"axis": attrs["axis"] + 1})]
    return batch


def _join_bind(*ss, axis, extra=0):
    return {"axis": shapes.one(axis, len(ss[0]) + extra)}


def _concat_shape(*ss, axis):
    first = ss[0]
    for k, s in enumerate(ss[1:], 1):
        if len(s) != len(first) or any(a != b for i, (a, b) in
                                       enumerate(zip(s, first, strict=True)) if i != axis):
            raise ShapeMismatch(f"operand {k} of shape {s} does not match {first} outside "
                                f"axis {axis}")
    return first[:axis] + (sum(s[axis] for s in ss),) + first[axis + 1:]


def _concat_grad(t, g):
    axis = t.attrs["axis"]
    after = (slice(None),) * (len(t.shape) - 1 - axis)  # indexed from the end: lead axes kept
    out, start = [], 0
    for p, need in zip(t.parents, t.needs, strict=True):
        stop = start + p.shape[axis]
        out.append(_index(g, (Ellipsis, slice(start, stop), *after)) if need else None)
        start = stop
    return tuple(out)


defop("concat", 1, lambda *xs, axis: np.concatenate(xs, axis), _concat_grad, _concat_shape,
      "the operands joined along axis (numpy.concatenate)", "g sliced back into each "
      "operand's part", variadic=True, bind=_join_bind, flops=_zero_flops,
      batch=_join_batch("concat"),
      attrs=(Attr("axis", "int", 0, "the axis to join along"),))


def _stack_shape(*ss, axis):
    for k, s in enumerate(ss[1:], 1):
        if s != ss[0]:
            raise ShapeMismatch(f"operand {k} of shape {s} does not match {ss[0]}: stack "
                                f"needs one shape")
    return ss[0][:axis] + (len(ss),) + ss[0][axis:]


def _stack_grad(t, g):
    after = (slice(None),) * (len(t.shape) - 1 - t.attrs["axis"])
    return tuple(_index(g, (Ellipsis, i, *after)) if need else None
                 for i, need in enumerate(t.needs))


defop("stack", 1, lambda *xs, axis: np.stack(xs, axis), _stack_grad, _stack_shape,
      "the operands stacked along a new axis (numpy.stack)", "g's slice i to operand i",
      variadic=True, bind=lambda *ss, axis: _join_bind(*ss, axis=axis, extra=1),
      flops=_zero_flops, batch=_join_batch("stack"),
      attrs=(Attr("axis", "int", 0, "where the new axis goes"),))


# ---- getitem and its transpose ----------------------------------------------------------

def _key(s, index):
    """The index against shape s as a NumPy key: "..." spelled out, each int checked against
    its axis and made non-negative, dicts as slices."""
    used = sum(e is not None and e != "..." for e in index)
    if used > len(s):
        raise BadAttribute(f"the index has {used} entries for a tensor of rank {len(s)}",
                           path=("index",))
    key, axis = [], 0
    for k, e in enumerate(index):
        if e is None:
            key.append(None)
        elif isinstance(e, dict):
            key.append(slice(e["start"], e["stop"], e["step"]))
            axis += 1
        elif e == "...":
            key += [slice(None)] * (len(s) - used)
            axis += len(s) - used
        else:
            d = s[axis]
            if not -d <= e < d:
                raise BadAttribute(f"index {e} is out of range for axis {axis} of size {d}",
                                   path=("index", k))
            key.append(e % d)
            axis += 1
    return {"index": tuple(key)}


def _indexed_shape(s, index):
    out, axis = [], 0
    for e in index:
        if e is None:
            out.append(1)
            continue
        if isinstance(e, slice):
            out.append(len(range(*e.indices(s[axis]))))
        axis += 1
    return (*out, *s[axis:])


def _json_index(key) -> list:
    """A bound NumPy key back in the index's JSON form."""
    return [{"start": e.start, "stop": e.stop, "step": e.step} if isinstance(e, slice) else e
            for e in key]


def _scatter(g, index, shape):
    out = np.zeros(shape, g.dtype)
    out[index] = g
    return out


_scatter_op = _fn(_scatter, "scatter")


def _getitem_grad(t, g):
    lead = _lead(t, g)
    key = (slice(None),) * len(lead) + t.attrs["index"]
    return (_scatter_op(g, index=key, shape=lead + t.parents[0].shape),)


defop("getitem", 1, lambda x, index: np.array(x[index]), _getitem_grad, _indexed_shape,
      "x[index], NumPy basic indexing: ints, slices, null (a new axis), \"...\"",
      "g put back at the index into zeros of x's shape", operator="[]", bind=_key,
      flops=_zero_flops, linear="linear",
      batch=lambda attrs, shapes_, out, b: {"index": _json_index((slice(None),
                                                                  *attrs["index"]))},
      attrs=(Attr("index", "index", doc='one entry per indexed axis: an '
                                     'int, {"start", "stop", "step"}, null or "..."'),))

defop("scatter", 1, _scatter,
      lambda t, g: (_index(g, (slice(None),) * len(_lead(t, g)) + t.attrs["index"]),),
      lambda s, index, shape: tuple(shape),
      "zeros of shape with x put at index (getitem's transpose)", "g[index]", internal=True,
      flops=_zero_flops, batch=None, attrs=(Attr("index", "any"), Attr("shape", "any")))


# ---- take and its transpose -------------------------------------------------------------

def _take_bind(s, indices, axis):
    axis = shapes.one(axis, len(s))
    d = s[axis]
    for k, i in enumerate(indices):
        if not -d <= i < d:
            raise BadAttribute(f"index {i} is out of range for axis {axis} of size {d}",
                               path=("indices", k))
    return {"indices": tuple(i % d for i in indices), "axis": axis}


def _take(x, indices, axis):
    return np.take(x, np.asarray(indices, np.intp), axis)


def _scatter_add(g, indices, axis, shape):
    out = np.zeros(shape, g.dtype)
    key = (slice(None),) * (len(shape) + axis) + (np.asarray(indices, np.intp),)
    if len(set(indices)) == len(indices):
        out[key] = g
    else:  # repeated indices: each adds its share
        np.add.at(out, key, g)
    return out


_take_op, _scatter_add_op = _fn(_take, "take"), _fn(_scatter_add, "scatter_add")


def _take_grad(t, g):
    x, axis = t.parents[0], t.attrs["axis"]
    return (_scatter_add_op(g, indices=t.attrs["indices"], axis=axis - len(x.shape),
                            shape=_lead(t, g) + x.shape),)


defop("take", 1, _take, _take_grad,
      lambda s, indices, axis: s[:axis] + (len(indices),) + s[axis + 1:],
      "x's entries at indices along axis (numpy.take)",
      "g added up at the indices (repeated indices add)", bind=_take_bind, flops=_zero_flops,
      linear="linear", batch=lambda attrs, shapes_, out, b: {"indices": attrs["indices"],
                                                            "axis": attrs["axis"] + 1},
      attrs=(Attr("indices", "ints", doc="the positions to take; negative count from the end"),
             Attr("axis", "int", 0, "the axis to take along")))

defop("scatter_add", 1, _scatter_add,
      lambda t, g: (_take_op(g, indices=t.attrs["indices"], axis=t.attrs["axis"]),),
      lambda s, indices, axis, shape: tuple(shape),
      "zeros of shape with x added at indices along axis (take's transpose)",
      "g taken at indices", internal=True, flops=_zero_flops, batch=None,
      attrs=(Attr("indices", "any"), Attr("axis", "any"), Attr("shape", "any")))

