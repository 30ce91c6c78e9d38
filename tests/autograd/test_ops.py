"""Every op of the registry: forward against NumPy in float64, gradient against central
differences, dtypes kept. One row per op (as JAX's lax_autodiff_test); the table must
cover `autograd.OPS`, so an op added without a row fails here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import OPS, DtypeMismatch, Tensor, functions

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- input generators: shapes and values kept away from kinks and singularities --------

def floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def away_from_zero(lo: float = 0.1, hi: float = 2.0):
    return st.one_of(floats(-hi, -lo), floats(lo, hi))


SMALL = floats(-2, 2)


def shapes(min_dims: int = 0, max_dims: int = 3):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=4)


def arrays(shape, elements=SMALL):
    return hnp.arrays(np.float64, shape, elements=elements)


@st.composite
def unary(draw, elements=SMALL, min_dims=0):
    return (draw(arrays(draw(shapes(min_dims)), elements)),), {}


@st.composite
def broadcasting(draw):
    """Two arrays whose shapes broadcast (equal, trailing, size-1 dims, 0-d)."""
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                   max_side=4)).input_shapes
    return (draw(arrays(a)), draw(arrays(b))), {}


@st.composite
def matmuls(draw):
    """Operands of rank >= 2 whose batch dimensions broadcast."""
    a, b = draw(hnp.mutually_broadcastable_shapes(
        signature="(m,k),(k,n)->(m,n)", max_dims=2, max_side=4)).input_shapes
    return (draw(arrays(a)), draw(arrays(b))), {}


@st.composite
def powers(draw):
    n = draw(st.sampled_from([2, 3, 0.5, -1, 0, 1, 1.5, -0.5, -2]))
    # a non-integer power needs a positive base; a negative one stays away from 0
    elements = away_from_zero(0.2) if float(n).is_integer() else floats(0.2, 2)
    return (draw(arrays(draw(shapes()), elements)),), {"exponent": n}


def axis_lists(ndim: int):
    """Distinct axes, some negative, in any order (e.g. [2, 0] or [-1, 0])."""
    return st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim,
                    unique_by=lambda a: a % ndim)


def _reduced(draw, x: np.ndarray) -> tuple:
    """A reduction's arguments over x: an axis (none, one, or a list) and keepdims."""
    options = [st.none()]
    if x.ndim:
        options += [st.integers(-x.ndim, x.ndim - 1), axis_lists(x.ndim)]
    return (x,), {"axis": draw(st.one_of(options)), "keepdims": draw(st.booleans())}


@st.composite
def reductions(draw):
    return _reduced(draw, draw(arrays(draw(shapes()))))


@st.composite
def transposes(draw):
    x = draw(arrays(draw(shapes())))
    if draw(st.booleans()):
        return (x,), {}
    perm = draw(st.permutations(range(x.ndim)))
    negative = draw(st.lists(st.booleans(), min_size=x.ndim, max_size=x.ndim))
    return (x,), {"axes": [a - x.ndim if neg else a for a, neg in zip(perm, negative, strict=True)]}


@st.composite
def reshapes(draw):
    x = draw(arrays(draw(shapes())))
    s, n = x.shape, x.size
    targets = [[-1], [n], [1, -1], [-1, 1], list(reversed(s)), [n, 1, 1], []]
    targets += [[*s[:k], -1] for k in range(len(s))]
    targets += [[-1, *s[k:]] for k in range(1, len(s))]
    target = draw(st.sampled_from([t for t in targets if t or n == 1]))
    return (x,), {"shape": target}


@st.composite
def softmaxes(draw):
    x = draw(arrays(draw(shapes()), floats(-3, 3)))
    if not x.ndim:
        return (x,), {}
    return (x,), {"axis": draw(st.integers(-x.ndim, x.ndim - 1))}


@st.composite
def divisions(draw):
    """x / y with broadcasting, the divisor away from zero."""
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                   max_side=4)).input_shapes
    return (draw(arrays(a)), draw(arrays(b, away_from_zero(0.3)))), {}


@st.composite
def broadcasts(draw):
    """x and a shape it broadcasts to (new axes in front, size-1 axes stretched)."""
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                   max_side=3)).input_shapes
    return (draw(arrays(a)),), {"shape": list(np.broadcast_shapes(a, b))}


@st.composite
def pairs(draw, kink: bool = False):
    """(pred, target) of one shape; with `kink`, pred - target stays away from 0."""
    shape = draw(shapes())
    target = draw(arrays(shape))
    if kink:
        return (target + draw(arrays(shape, away_from_zero())), target), {}
    return (draw(arrays(shape)), target), {}


# grids a quarter apart: x from one, y from the other never tie (ties have their own tests)
ODD = st.sampled_from([k / 4 + 0.125 for k in range(-8, 8)])
EVEN = st.sampled_from([k / 4 for k in range(-8, 9)])


@st.composite
def untied(draw):
    """Two broadcasting arrays that never tie: maximum, minimum and comparisons."""
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                   max_side=4)).input_shapes
    x, y = draw(arrays(a, ODD)), draw(arrays(b, EVEN))
    return ((x, y) if draw(st.booleans()) else (y, x)), {}


@st.composite
def wheres(draw):
    """cond, x and y, all three broadcasting. cond is never 0 here: the derivative tests
    move every operand along a tangent, and any move of a 0 flips the choice. Zeros in
    cond, where y is picked, have their own tests (test_ops_edges.py)."""
    c, a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3,
                                                      max_side=3)).input_shapes
    cond = draw(arrays(c, st.sampled_from([1.0, -2.0, 0.5])))
    return (cond, draw(arrays(a)), draw(arrays(b))), {}


@st.composite
def clips(draw):
    x = draw(arrays(draw(shapes()), ODD))   # never within 1/8 of a bound
    lo, hi = draw(st.sampled_from([None, -1.0, 0.0])), draw(st.sampled_from([None, 0.5, 1.5]))
    attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None or draw(st.booleans())}
    return (x,), attrs


@st.composite
def extremes(draw):
    """A reduction's arguments over distinct values (no ties: they have their own test)."""
    shape = draw(shapes())
    n = int(np.prod(shape))
    x = (np.array(draw(st.permutations(range(n))), dtype=np.float64) * 0.25 - 1).reshape(shape)
    return _reduced(draw, x)


@st.composite
def cross_entropies(draw):
    shape = draw(shapes(min_dims=1))
    logits, target = draw(arrays(shape, floats(-3, 3))), draw(arrays(shape, floats(0, 1)))
    return (logits, target), {"axis": draw(st.integers(-len(shape), len(shape) - 1))}


@st.composite
def logit_pairs(draw):
    shape = draw(shapes())
    return (draw(arrays(shape, floats(-4, 4))), draw(arrays(shape, floats(0, 1)))), {}


@st.composite
def joins(draw, stack: bool = False):
    """1 to 3 operands that concatenate (or stack) along a random axis."""
    shape = draw(shapes(min_dims=0 if stack else 1))
    n = draw(st.integers(1, 3))
    ndim = len(shape) + stack
    axis = draw(st.integers(-ndim, ndim - 1))
    if stack:
        return tuple(draw(arrays(shape)) for _ in range(n)), {"axis": axis}
    sides = [draw(st.integers(1, 3)) for _ in range(n)]
    parts = [shape[: axis % ndim] + (d,) + shape[axis % ndim + 1:] for d in sides]
    return tuple(draw(arrays(s)) for s in parts), {"axis": axis}


@st.composite
def indexes(draw):
    """A NumPy basic index in its JSON form: ints (negative too), slices with any step, new
    axes and "..."."""
    x = draw(arrays(draw(shapes())))
    index = []
    ellipsis_at = draw(st.integers(0, x.ndim + 1))
    for axis in range(x.ndim + 1):
        if axis == ellipsis_at:
            index.append("...")
            break
        if draw(st.integers(0, 4)) == 0:
            index.append(None)
        if axis == x.ndim:
            break
        d = x.shape[axis]
        if draw(st.booleans()):
            index.append(draw(st.integers(-d, d - 1)))
        else:
            bound = st.one_of(st.none(), st.integers(-d - 2, d + 2))
            index.append({"start": draw(bound), "stop": draw(bound),
                          "step": draw(st.sampled_from([None, 1, 2, -1, -2, 3]))})
    return (x,), {"index": index}


def numpy_key(index):
    return tuple(slice(e["start"], e["stop"], e["step"]) if isinstance(e, dict) else
                 Ellipsis if e == "..." else e for e in index)


@st.composite
def takes(draw):
    x = draw(arrays(draw(shapes(min_dims=1))))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    d = x.shape[axis]
    return (x,), {"indices": draw(st.lists(st.integers(-d, d - 1), max_size=5)), "axis": axis}


@st.composite
def expand_dimses(draw):
    x = draw(arrays(draw(shapes())))
    return (x,), {"axis": draw(st.integers(-x.ndim - 1, x.ndim))}


@st.composite
def squeezes(draw):
    shape = draw(st.lists(st.sampled_from([1, 1, 2, 3]), max_size=4))
    x = draw(arrays(tuple(shape)))
    ones = [i for i, d in enumerate(shape) if d == 1]
    if not ones or draw(st.booleans()):
        return (x,), draw(st.sampled_from([{}, {"axis": None}]))
    axes = draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
    return (x,), {"axis": axes[0] - len(shape) if len(axes) == 1 else axes}


EINSUMS = ["ij,jk->ik", "ij->i", "ij->ji", "i,i->", "bij,bjk->bik", "ij,j->i", "i,j->ij",
           "ijk->kj", "ij,jk,kl->il", "ij->", "i->i", "ab,cb->ca"]


@st.composite
def einsums(draw):
    eq = draw(st.sampled_from(EINSUMS))
    sizes = {c: draw(st.integers(1, 3)) for c in sorted(set(eq) - set(",->"))}
    terms = eq.split("->")[0].split(",")
    return tuple(draw(arrays(tuple(sizes[c] for c in t))) for t in terms), {"equation": eq}


# ---- NumPy references, written out in float64 -------------------------------------------

def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _matmul(x, y):
    # broadcast the batch dims by elementwise product, contract k: no np.matmul
    return np.sum(x[..., :, :, None] * y[..., None, :, :], axis=-2)


def _mean(x, axis, keepdims):
    total = np.sum(x, axis=axis, keepdims=keepdims)
    return total / (x.size // np.size(total))   # each output averages size/outputs


def _softmax(x, axis=-1):
    if x.ndim == 0:
        return np.ones(())
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _log_softmax(x, axis=-1):
    return np.zeros(()) if x.ndim == 0 else x - _logsumexp(x, axis, keepdims=True)


def _cross_entropy(x, t, axis=-1):
    return -np.sum(t * _log_softmax(x, axis)) / (x.size / x.shape[axis])


@dataclass(frozen=True)
class Case:
    args: st.SearchStrategy        # draws (arrays, attrs)
    ref: Callable                  # (*arrays, **attrs) -> float64 array


CASES: dict[str, Case] = {
    "add": Case(broadcasting(), lambda x, y: x + y),
    "sub": Case(broadcasting(), lambda x, y: x - y),
    "mul": Case(broadcasting(), lambda x, y: x * y),
    "div": Case(divisions(), lambda x, y: x * (1.0 / y)),
    "broadcast_to": Case(broadcasts(), lambda x, shape: x + np.zeros(shape)),
    "matmul": Case(matmuls(), _matmul),
    "pow": Case(powers(), lambda x, exponent: x ** float(exponent)),
    "neg": Case(unary(), lambda x: 0.0 - x),
    "abs": Case(unary(away_from_zero()), lambda x: np.where(x < 0, -x, x)),
    "transpose": Case(transposes(),
                      lambda x, axes=None: np.transpose(x, axes if axes is None else tuple(axes))),
    "reshape": Case(reshapes(), lambda x, shape: np.reshape(x, shape)),
    "sum": Case(reductions(), lambda x, axis, keepdims:
                np.sum(x, axis=_axis(axis), keepdims=keepdims)),
    "mean": Case(reductions(), lambda x, axis, keepdims: _mean(x, _axis(axis), keepdims)),
    "exp": Case(unary(floats(-3, 3)), np.exp),
    "log": Case(unary(floats(0.1, 5)), np.log),
    "sqrt": Case(unary(floats(0.1, 5)), lambda x: x ** 0.5),
    "sin": Case(unary(floats(-3, 3)), np.sin),
    "cos": Case(unary(floats(-3, 3)), np.cos),
    "tan": Case(unary(floats(-1.2, 1.2)), lambda x: np.sin(x) / np.cos(x)),
    "relu": Case(unary(away_from_zero()), lambda x: x * (x > 0)),
    "sigmoid": Case(unary(floats(-6, 6)), lambda x: 1 / (1 + np.exp(-x))),
    "tanh": Case(unary(floats(-3, 3)), lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1)),
    "softmax": Case(softmaxes(), _softmax),
    "mse_loss": Case(pairs(), lambda p, t: np.sum((p - t) ** 2) / p.size),
    "mae_loss": Case(pairs(kink=True), lambda p, t: np.sum(np.abs(p - t)) / p.size),
    # v1.1 (PROTOCOL.md §2.1)
    "maximum": Case(untied(), lambda x, y: np.where(x > y, x, y + 0 * x)),
    "minimum": Case(untied(), lambda x, y: np.where(x < y, x, y + 0 * x)),
    "greater": Case(untied(), lambda x, y: (x > y) * 1.0),
    "less": Case(untied(), lambda x, y: (x < y) * 1.0),
    "where": Case(wheres(), lambda c, x, y: np.where(c != 0, x, y)),
    "clip": Case(clips(), lambda x, min=None, max=None: np.clip(  # noqa: A002
        x, -np.inf if min is None else min, np.inf if max is None else max)),
    "square": Case(unary(), lambda x: x * x),
    "log1p": Case(unary(floats(-0.8, 3)), lambda x: np.log(1 + x)),
    "expm1": Case(unary(floats(-3, 3)), lambda x: np.exp(x) - 1),
    "softplus": Case(unary(floats(-6, 6)), lambda x: np.log(1 + np.exp(x))),
    "log_sigmoid": Case(unary(floats(-6, 6)), lambda x: -np.log(1 + np.exp(-x))),
    "max": Case(extremes(), lambda x, axis, keepdims:
                np.max(x, axis=_axis(axis), keepdims=keepdims)),
    "min": Case(extremes(), lambda x, axis, keepdims:
                np.min(x, axis=_axis(axis), keepdims=keepdims)),
    "logsumexp": Case(reductions(), lambda x, axis, keepdims:
                      _logsumexp(x, _axis(axis), keepdims)),
    "log_softmax": Case(softmaxes(), _log_softmax),
    "cross_entropy": Case(cross_entropies(), _cross_entropy),
    "binary_cross_entropy_with_logits": Case(
        logit_pairs(), lambda x, t: np.sum(np.log(1 + np.exp(x)) - x * t) / x.size),
    "concat": Case(joins(), lambda *xs, axis: np.concatenate(xs, axis)),
    "stack": Case(joins(stack=True), lambda *xs, axis: np.stack(xs, axis)),
    "getitem": Case(indexes(), lambda x, index: x[numpy_key(index)]),
    "take": Case(takes(), lambda x, indices, axis: np.take(x, np.array(indices, int), axis)),
    "expand_dims": Case(expand_dimses(), lambda x, axis: np.expand_dims(x, axis)),
    "squeeze": Case(squeezes(), lambda x, axis=None: np.squeeze(
        x, tuple(axis) if isinstance(axis, list) else axis)),
    "einsum": Case(einsums(), lambda *xs, equation: np.einsum(equation, *xs)),
}


def call(name: str, *args, **attrs) -> Tensor:
    return getattr(functions, name)(*args, **attrs)


def tensors(arrays_, dtype="float64", requires_grad=True) -> list[Tensor]:
    return [Tensor(a, requires_grad=requires_grad, dtype=dtype) for a in arrays_]


def test_table_covers_every_op():
    assert set(CASES) == set(OPS)


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_forward_matches_numpy(name, data):
    args, attrs = data.draw(CASES[name].args)
    y = call(name, *tensors(args, requires_grad=False), **attrs)
    expected = CASES[name].ref(*args, **attrs)
    assert y.shape == np.shape(expected)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_gradient_matches_central_differences(name, data, check_grads):
    args, attrs = data.draw(CASES[name].args)
    check_grads(lambda *xs: call(name, *xs, **attrs), *args)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_dtype_is_kept_for_values_and_gradients(name, dtype, data):
    """No NumPy promotion: float32 stays float32 (also for 0-d operands), float64 is honoured."""
    args, attrs = data.draw(CASES[name].args)
    xs = tensors(args, dtype)
    y = call(name, *xs, **attrs)
    assert isinstance(y.data, np.ndarray) and y.data.dtype == dtype and y.dtype == dtype
    y.backward(np.ones(y.shape, dtype))
    for x in xs:
        assert np.asarray(x.grad).dtype == dtype
    np.testing.assert_allclose(y.data, CASES[name].ref(*args, **attrs),
                               rtol=1e-5 if dtype == "float32" else 1e-10, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_graph_runner_keeps_dtype(name, dtype, data):
    args, attrs = data.draw(CASES[name].args)
    ids = [f"a{i}" for i in range(len(args))]
    node = {"id": "y", "op": name, "args": ids, **({"attrs": attrs} if attrs else {})}
    shape = np.shape(CASES[name].ref(*args, **attrs))
    seed = np.ones(shape, dtype)
    r = autograd.evaluate([node], dict(zip(ids, args, strict=True)), requires_grad=ids,
                          grad={"of": "y", "seed": seed}, dtype=dtype)
    assert r.outputs["y"].dtype == dtype
    assert r.outputs["y"].shape == shape
    assert set(r.gradients) == set(ids)
    for i, a in zip(ids, args, strict=True):
        assert r.gradients[i].dtype == dtype and r.gradients[i].shape == a.shape


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.arity == 2))
def test_mixing_float32_and_float64_raises(name):
    a = np.ones((2, 2))
    x32, x64 = Tensor(a, dtype="float32"), Tensor(a, dtype="float64")
    for args in ((x32, x64), (x64, x32)):
        with pytest.raises(DtypeMismatch) as e:
            call(name, *args)
        assert e.value.code == "dtype_mismatch"


def test_number_literal_takes_the_tensors_dtype():
    for dtype in ("float32", "float64"):
        x = Tensor([1.0, 2.0], requires_grad=True, dtype=dtype)
        for y in (x + 0.1, 0.1 + x, x - 0.1, 0.1 - x, x * 0.1, 0.1 * x, x ** 0.5):
            assert y.dtype == dtype and y.data.dtype == dtype


# ---- broadcasting of the elementwise binary ops -----------------------------------------

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply}
BROADCAST_SHAPES = [
    ((3, 4), (3, 4)),      # equal
    ((3, 4), (4,)),        # trailing
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),      # size-1 dims on both sides
    ((2, 3, 1), (3, 4)),
    ((), (2, 3)),          # 0-d with n-d
    ((2, 3), ()),
    ((1,), (2, 3)),
]


@pytest.mark.parametrize("shapes_", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_broadcasting(name, shapes_, check_grads):
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal(s) for s in shapes_)
    y = call(name, *tensors((a, b), requires_grad=False))
    np.testing.assert_allclose(y.data, BINARY[name](a, b), rtol=1e-12)
    ga, gb = check_grads(lambda x, z: call(name, x, z), a, b)
    assert ga.shape == a.shape and gb.shape == b.shape


@pytest.mark.parametrize("shapes_", BROADCAST_SHAPES, ids=str)
def test_broadcast_gradient_is_summed(shapes_):
    """d sum(x + y) / dy counts how often each element of y was broadcast."""
    a, b = (np.ones(s) for s in shapes_)
    x, y = tensors((a, b))
    (x + y).sum().backward()
    out = np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_array_equal(x.grad, np.full(a.shape, np.prod(out) / a.size))
    np.testing.assert_array_equal(y.grad, np.full(b.shape, np.prod(out) / b.size))


NUMBER_ON_EITHER_SIDE = [
    (lambda x: x + 3.0, lambda a: a + 3.0, 1.0),
    (lambda x: 3.0 + x, lambda a: 3.0 + a, 1.0),
    (lambda x: x - 2.0, lambda a: a - 2.0, 1.0),
    (lambda x: 2.0 - x, lambda a: 2.0 - a, -1.0),
    (lambda x: x * 3, lambda a: a * 3, 3.0),
    (lambda x: 3 * x, lambda a: 3 * a, 3.0),
    (lambda x: -x, lambda a: -a, -1.0),
    (lambda x: functions.sub(2.0, x), lambda a: 2.0 - a, -1.0),
    (lambda x: functions.mul(x, -0.5), lambda a: -0.5 * a, -0.5),
    (lambda x: functions.add(1, x), lambda a: 1 + a, 1.0),
]


@pytest.mark.parametrize("fn, ref, slope", NUMBER_ON_EITHER_SIDE)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=str)
def test_number_literal_on_either_side(fn, ref, slope, shape, check_grads):
    a = np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape)
    x = Tensor(a, requires_grad=True, dtype="float64")
    y = fn(x)
    np.testing.assert_allclose(y.data, ref(a))
    y.backward(np.ones(shape))
    np.testing.assert_array_equal(x.grad, np.full(shape, slope))
    check_grads(fn, a)


# ---- matmul -----------------------------------------------------------------------------

@pytest.mark.parametrize("sa, sb", [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)),        # batched
    ((1, 3, 4), (5, 4, 2)),        # batch dim broadcast on the left
    ((3, 4), (2, 4, 5)),           # 2-D with batched
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
], ids=str)
def test_matmul(sa, sb, check_grads):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    y = call("matmul", *tensors((a, b), requires_grad=False))
    np.testing.assert_allclose(y.data, _matmul(a, b), rtol=1e-12, atol=1e-12)
    ga, gb = check_grads(lambda x, z: x @ z, a, b)
    # the gradient sums over the batch dims the operand was broadcast along
    g = np.random.default_rng(0).standard_normal(y.shape)
    full_a = np.einsum("...mn,...kn->...mk", g, np.broadcast_to(b, y.shape[:-2] + b.shape[-2:]))
    full_b = np.einsum("...mk,...mn->...kn", np.broadcast_to(a, y.shape[:-2] + a.shape[-2:]), g)
    np.testing.assert_allclose(ga, _sum_to(full_a, sa), rtol=1e-10)
    np.testing.assert_allclose(gb, _sum_to(full_b, sb), rtol=1e-10)


def _sum_to(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, d in enumerate(shape) if d == 1), keepdims=True)


# ---- reductions, shape ops, softmax, pow ------------------------------------------------

AXES = [None, 0, 1, -1, -2, [0, 2], [2, 0], [-1, 0], [0, 1, 2], [1]]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reduction_axes(name, axis, keepdims, check_grads):
    a = np.random.default_rng(1).standard_normal((2, 3, 4))
    y = call(name, Tensor(a, dtype="float64"), axis=axis, keepdims=keepdims)
    ref = getattr(np, name)(a, axis=_axis(axis), keepdims=keepdims)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.data, ref, rtol=1e-12)
    (g,) = check_grads(lambda x: call(name, x, axis=axis, keepdims=keepdims), a)
    assert g.shape == a.shape


@pytest.mark.parametrize("axes", [None, (1, 0, 2), (2, 0, 1), (-1, 0, 1), (0, 1, 2)], ids=str)
def test_transpose(axes, check_grads):
    a = np.random.default_rng(2).standard_normal((2, 3, 4))
    attrs = {} if axes is None else {"axes": list(axes)}
    x = Tensor(a, dtype="float64")
    y = x.transpose(**attrs)
    np.testing.assert_array_equal(y.data, np.transpose(a, axes))
    if axes is None:
        np.testing.assert_array_equal(x.T().data, a.T)
    check_grads(lambda t: t.transpose(**attrs), a)


@pytest.mark.parametrize("shape", [[-1], [4, -1], [-1, 2, 3], [3, 8], [2, -1, 1, 2]], ids=str)
def test_reshape(shape, check_grads):
    a = np.arange(24.0).reshape(2, 3, 4)
    y = call("reshape", Tensor(a, dtype="float64"), shape=shape)
    np.testing.assert_array_equal(y.data, a.reshape(shape))
    check_grads(lambda t: call("reshape", t, shape=shape), a)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_softmax_axes(axis, check_grads):
    a = np.random.default_rng(4).standard_normal((2, 3, 4))
    y = call("softmax", Tensor(a, dtype="float64"), axis=axis)
    np.testing.assert_allclose(y.data, _softmax(a, axis), rtol=1e-12)
    np.testing.assert_allclose(y.data.sum(axis=axis), 1.0, rtol=1e-12)
    check_grads(lambda t: t.softmax(axis), a)


def test_softmax_is_numerically_stable():
    y = call("softmax", Tensor([1000.0, 1000.0, -1000.0], dtype="float64"))
    np.testing.assert_allclose(y.data, [0.5, 0.5, 0.0], atol=1e-300)


@pytest.mark.parametrize("n", [2, 3, 0.5, -1, 0, 1.5])
def test_pow_exponents(n, check_grads):
    a = np.array([[0.3, 1.7], [2.5, 0.9]])
    y = Tensor(a, dtype="float64") ** n
    np.testing.assert_allclose(y.data, a ** n, rtol=1e-12)
    check_grads(lambda t: t ** n, a)


def test_pow_exponent_zero_has_zero_gradient_even_at_zero():
    x = Tensor([0.0, -1.5, 2.0], requires_grad=True, dtype="float64")
    y = x ** 0
    np.testing.assert_array_equal(y.data, [1.0, 1.0, 1.0])
    y.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


def test_pow_two_at_zero():
    x = Tensor([0.0, -3.0], requires_grad=True, dtype="float64")
    (x ** 2).backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [0.0, -6.0])


@pytest.mark.parametrize("name, at, slope", [("abs", 0.0, 0.0), ("relu", 0.0, 0.0),
                                              ("abs", -2.0, -1.0), ("relu", 3.0, 1.0)])
def test_kinks_have_the_documented_gradient(name, at, slope):
    x = Tensor(at, requires_grad=True, dtype="float64")
    call(name, x).backward()
    assert float(x.grad) == slope


def test_mae_loss_gradient_is_zero_where_pred_equals_target():
    p = Tensor([1.0, 2.0], requires_grad=True, dtype="float64")
    call("mae_loss", p, Tensor([1.0, 0.0], dtype="float64")).backward()
    np.testing.assert_array_equal(p.grad, [0.0, 0.5])
