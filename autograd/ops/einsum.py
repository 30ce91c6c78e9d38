"""einsum: contractions written as subscripts, "ij,jk->ik" (explicit output only).

The VJP for operand i is itself an einsum: g (subscripts of the output) with
every other operand, to operand i's subscripts; letters that only operand i
has are summed in the forward pass, so they come back by broadcasting. Batch
axes of g get letters the equation does not use.
"""

from __future__ import annotations

import math
import string

import numpy as np

from ..errors import BadAttribute, ShapeMismatch
from ..registry import OPS, Attr, defop
from ..tensor import Tensor, apply
from .rules import _broadcast, _lead, _x

LETTERS = string.ascii_letters


def parse(equation: str, n: int) -> tuple[list[str], str]:
    """The operands' subscripts and the output's, checked; BadAttribute names what is wrong."""
    def bad(why):
        return BadAttribute(f"equation {equation!r}: {why}", path=("equation",))

    if equation.count("->") != 1:
        raise bad('needs the explicit form "inputs->output", e.g. "ij,jk->ik"')
    left, out = equation.replace(" ", "").split("->")
    terms = left.split(",")
    if len(terms) != n:
        raise bad(f"names {len(terms)} operand(s) but {n} were given")
    for term in [*terms, out]:
        if any(c not in LETTERS for c in term):
            raise bad("subscripts are letters a-z, A-Z (no '...')")
        if len(set(term)) != len(term):
            raise bad(f"{term!r} repeats a letter (diagonals are not supported)")
    missing = set(out) - set("".join(terms))
    if missing:
        raise bad(f"output letter {sorted(missing)[0]!r} names no operand's axis")
    return terms, out


def _sizes(terms, ss) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for k, (term, s) in enumerate(zip(terms, ss, strict=True)):
        if len(term) != len(s):
            raise ShapeMismatch(f"operand {k} has rank {len(s)} but {term!r} names {len(term)} "
                                f"axes")
        for c, d in zip(term, s, strict=True):
            if sizes.setdefault(c, d) != d:
                raise ShapeMismatch(f"letter {c!r} is {sizes[c]} in one operand and {d} in "
                                    f"operand {k}")
    return sizes


def _shape(*ss, equation):
    terms, out = parse(equation, len(ss))
    sizes = _sizes(terms, ss)
    return tuple(sizes[c] for c in out)


def _bind(*ss, equation):
    parse(equation, len(ss))
    return {"equation": equation.replace(" ", "")}


def _einsum(*xs, equation):
    # a pairwise path runs each contraction through BLAS (tensordot) instead of C loops
    return np.einsum(equation, *xs, optimize=len(xs) > 1 and ("greedy" if len(xs) > 2 else
                                                                ["einsum_path", (0, 1)]))


def _einsum_any(equation, *xs):
    """The einsum op when traced (every operand is then a Tensor), else NumPy's."""
    if xs[0].__class__ is Tensor:
        return apply(OPS["einsum"], *xs, equation=equation)
    return _einsum(*xs, equation=equation)


def _einsum_grad(t, g):
    terms, out = parse(t.attrs["equation"], len(t.parents))
    lead = _lead(t, g)
    used = set("".join(terms))
    batch = "".join([c for c in LETTERS if c not in used][: len(lead)])
    grads = []
    for i, (p, need) in enumerate(zip(t.parents, t.needs, strict=True)):
        if not need:
            grads.append(None)
            continue
        others = [j for j in range(len(terms)) if j != i]
        have = set(out).union(*(terms[j] for j in others))
        kept = "".join(c for c in terms[i] if c in have)
        eq = ",".join([batch + out, *(terms[j] for j in others)]) + "->" + batch + kept
        gi = _einsum_any(eq, g, *(_x(t, g, j) for j in others))
        if kept != terms[i]:  # letters only operand i had were summed: broadcast back
            kept_shape = (d if c in have else 1 for c, d in zip(terms[i], p.shape, strict=True))
            gi = gi.reshape(lead + tuple(kept_shape))
            gi = _broadcast(gi, lead + p.shape)
        grads.append(gi)
    return tuple(grads)


def _batch(attrs, shapes_, out, b):
    """vmap: every operand broadcast to (B, *shape), and a letter for the batch axis."""
    terms, out_sub = parse(attrs["equation"], len(shapes_))
    z = next(c for c in LETTERS if c not in attrs["equation"])
    eq = ",".join(z + term for term in terms) + "->" + z + out_sub
    steps = [("broadcast_to", [k], {"shape": (b, *s)}) for k, s in enumerate(shapes_)]
    return [*steps, ("einsum", [("step", k) for k in range(len(shapes_))], {"equation": eq})]


def _flops(in_shapes, out, attrs):
    terms, _ = parse(attrs["equation"], len(in_shapes))
    sizes = _sizes(terms, in_shapes)
    return 2 * math.prod(sizes.values())


defop("einsum", 1, _einsum, _einsum_grad, _shape,
      "Σ over the letters not in the output of the product of the operands "
      "(numpy.einsum, explicit \"->\")",
      "operand i: einsum of g with the other operands, to i's subscripts", variadic=True,
      bind=_bind, saves="x", flops=_flops, batch=_batch,
      attrs=(Attr("equation", "text", doc='subscripts, e.g. "ij,jk->ik"'),))
