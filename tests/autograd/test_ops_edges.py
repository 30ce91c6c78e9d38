"""The §2.1 ops at their edges: ties and boundaries (PyTorch's conventions), inputs of
magnitude 1,000, repeated indices, negative-step slices, variadic calls, and every error
each can raise, with its code and the path into the request."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import OPS, Tensor, functions
from autograd.registry import INTERNAL


def grad_of(name, *arrays, seed=None, which=0, **attrs):
    xs = [Tensor(a, requires_grad=True, dtype="float64") for a in arrays]
    y = getattr(functions, name)(*xs, **attrs)
    y.backward(np.ones(y.shape) if seed is None else seed)
    return xs[which].grad


# ---- ties and boundaries ----------------------------------------------------------------

@pytest.mark.parametrize("name, x, y, gx, gy", [
    ("maximum", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [0.0, 0.5, 1.0], [1.0, 0.5, 0.0]),
    ("minimum", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [1.0, 0.5, 0.0], [0.0, 0.5, 1.0]),
])
def test_maximum_minimum_split_ties_evenly(name, x, y, gx, gy):
    np.testing.assert_array_equal(grad_of(name, x, y), gx)
    np.testing.assert_array_equal(grad_of(name, x, y, which=1), gy)


def test_maximum_with_a_broadcast_number_sums_its_shares():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True, dtype="float64")
    y = Tensor(2.0, requires_grad=True, dtype="float64")
    functions.maximum(x, y).backward(np.ones(3))
    assert float(y.grad) == 1.5  # 1 (x=1) + 0.5 (tie) + 0 (x=3)


TIED = np.array([[1.0, 3.0, 0.0], [3.0, 2.0, 0.0]])


@pytest.mark.parametrize("name, axis, keepdims, expected", [
    ("max", None, False, [[0, 0.5, 0], [0.5, 0, 0]]),
    ("max", 1, True, [[0, 1, 0], [1, 0, 0]]),
    ("max", 0, False, [[0, 1, 0.5], [1, 0, 0.5]]),
    ("min", None, False, [[0, 0, 0.5], [0, 0, 0.5]]),
    ("min", [0, 1], True, [[0, 0, 0.5], [0, 0, 0.5]]),
    ("min", 1, False, [[0, 0, 1], [0, 0, 1]]),
])
def test_max_min_reductions_split_among_tied_extremes(name, axis, keepdims, expected):
    y = getattr(functions, name)(Tensor(TIED, dtype="float64"), axis=axis, keepdims=keepdims)
    g = grad_of(name, TIED, axis=axis, keepdims=keepdims, seed=np.ones(y.shape))
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("x, lo, hi, slope", [
    (0.0, 0.0, 1.0, 1.0), (1.0, 0.0, 1.0, 1.0), (-1e-9, 0.0, 1.0, 0.0), (2.0, 0.0, 1.0, 0.0),
    (5.0, None, 1.0, 0.0), (-5.0, None, 1.0, 1.0), (-5.0, 0.0, None, 0.0), (3.0, None, None, 1.0),
])
def test_clip_gradient_is_one_on_the_closed_interval(x, lo, hi, slope):
    assert float(grad_of("clip", x, min=lo, max=hi)) == slope


@pytest.mark.parametrize("name", ["greater", "less"])
def test_comparisons_carry_no_gradient_even_at_ties(name):
    x, y = [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]
    np.testing.assert_array_equal(grad_of(name, x, y), 0.0)
    np.testing.assert_array_equal(grad_of(name, x, y, which=1), 0.0)
    out = getattr(functions, name)(Tensor(x, dtype="float32"), Tensor(y, dtype="float32"))
    assert out.dtype == "float32"
    np.testing.assert_array_equal(out.data, [0, 0, 1] if name == "greater" else [1, 0, 0])


def test_where_sends_nothing_to_cond_and_no_nan_from_the_branch_not_taken():
    c, x, y = [0.0, 2.0, -1.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]
    np.testing.assert_array_equal(grad_of("where", c, x, y), 0.0)
    np.testing.assert_array_equal(grad_of("where", c, x, y, which=1), [0, 1, 1])
    np.testing.assert_array_equal(grad_of("where", c, x, y, which=2), [1, 0, 0])
    seed = np.array([np.inf, 1.0, 1.0])  # an infinite cotangent where y was picked
    np.testing.assert_array_equal(grad_of("where", c, x, y, seed=seed, which=1), [0, 1, 1])


def test_where_derivatives_follow_the_branch_cond_picks():
    """jvp, hvp and batched gradients where cond holds zeros (y picked) and non-zeros."""
    c, x, y = np.array([0.0, 2.0, 0.0]), np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    tx, ty = np.array([1.0, 10.0, 100.0]), np.array([-1.0, -10.0, -100.0])
    nodes = [{"id": "w", "op": "where", "args": ["c", "x", "y"]},
             {"id": "s", "op": "mul", "args": ["w", "w"]}, {"id": "f", "op": "sum", "args": ["s"]}]
    r = autograd.evaluate(nodes, {"c": c, "x": x, "y": y}, requires_grad=["c", "x", "y"],
                          grad={"of": "w", "seed": np.eye(3), "batch": True},
                          jvp={"of": ["w"], "tangents": {"c": tx, "x": tx, "y": ty}},
                          hvp={"of": "f", "tangents": {"x": tx, "y": ty}}, dtype="float64")
    np.testing.assert_array_equal(r.jvp["w"], [-1.0, 10.0, -100.0])
    np.testing.assert_array_equal(r.hvp["x"], [0.0, 20.0, 0.0])     # d²Σw²: 2 on the picked
    np.testing.assert_array_equal(r.hvp["y"], [-2.0, 0.0, -200.0])
    np.testing.assert_array_equal(r.gradients["c"], np.zeros((3, 3)))
    np.testing.assert_array_equal(r.gradients["x"], np.diag([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(r.gradients["y"], np.diag([1.0, 0.0, 1.0]))


# ---- large magnitudes -------------------------------------------------------------------

STABLE = {  # name: (forward, gradient) at x = [1000, -1000, 0], in float64
    "softplus": ([1000, 0, np.log(2)], [1, 0, 0.5]),
    "log_sigmoid": ([0, -1000, -np.log(2)], [0, 1, 0.5]),
    "logsumexp": (1000, [1, 0, 0]),
    "log_softmax": ([0, -2000, -1000], [-2, 1, 1]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(STABLE))
def test_stable_for_magnitude_1000(name, dtype):
    value, slope = STABLE[name]
    x = Tensor([1000.0, -1000.0, 0.0], requires_grad=True, dtype=dtype)
    y = getattr(functions, name)(x)
    y.backward(np.ones(y.shape, dtype))
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.data, value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad, slope, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_from_logits_stable_for_magnitude_1000(dtype):
    x = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    t = np.array([[0.0, 1.0], [0.0, 1.0]])
    logits = Tensor(x, requires_grad=True, dtype=dtype)
    ce = functions.cross_entropy(logits, Tensor(t, dtype=dtype))
    ce.backward()
    np.testing.assert_allclose(ce.data, 1000.0, rtol=1e-6)  # row 0 is off by 2000, row 1 right
    np.testing.assert_allclose(logits.grad, [[0.5, -0.5], [0, 0]], atol=1e-6)
    logits = Tensor(x, requires_grad=True, dtype=dtype)
    bce = functions.binary_cross_entropy_with_logits(logits, Tensor(t, dtype=dtype))
    bce.backward()
    np.testing.assert_allclose(bce.data, (1000 + 1000) / 4, rtol=1e-6)
    np.testing.assert_allclose(logits.grad, [[0.25, -0.25], [0, 0]], atol=1e-6)
    assert np.isfinite(logits.grad).all() and logits.grad.dtype == dtype


def test_second_derivative_of_logsumexp_at_magnitude_1000_in_float32():
    r = autograd.evaluate([{"id": "y", "op": "logsumexp", "args": ["x"]}],
                          {"x": np.array([1000.0, 999.0, -1000.0])}, requires_grad=["x"],
                          hvp={"of": "y", "tangents": {"x": np.array([1.0, 0.0, 0.0])}},
                          dtype="float32")
    s = np.exp([0.0, -1.0]) / np.exp([0.0, -1.0]).sum()
    # float32 keeps 1000 - logsumexp to ~6e-5: the softmax inherits that
    np.testing.assert_allclose(r.hvp["x"], [s[0] - s[0] ** 2, -s[0] * s[1], 0], atol=1e-4)


# ---- indexing and joins -----------------------------------------------------------------

def test_take_adds_up_repeated_indices():
    g = grad_of("take", [1.0, 2.0, 3.0], indices=[0, 0, 2, -1, 0], seed=np.arange(1.0, 6.0))
    np.testing.assert_array_equal(g, [1 + 2 + 5, 0, 3 + 4])


def test_take_along_an_inner_axis_with_repeats_has_the_right_second_derivative():
    r = autograd.evaluate([{"id": "t", "op": "take", "args": ["x"],
                            "attrs": {"indices": [1, 1], "axis": 1}},
                           {"id": "s", "op": "mul", "args": ["t", "t"]},
                           {"id": "y", "op": "sum", "args": ["s"]}],
                          {"x": np.array([[1.0, 2.0], [3.0, 4.0]])}, requires_grad=["x"],
                          grad={"of": "y"}, hvp={"of": "y", "tangents": {"x": np.ones((2, 2))}},
                          dtype="float64")
    np.testing.assert_array_equal(r.gradients["x"], [[0, 8], [0, 16]])  # d Σ 2 x_i1² = 4 x_i1
    np.testing.assert_array_equal(r.hvp["x"], [[0, 4], [0, 4]])


@pytest.mark.parametrize("index, key", [
    ([{"step": -1}], np.s_[::-1]),
    ([{"start": -1, "stop": 0, "step": -2}, 1], np.s_[-1:0:-2, 1]),
    (["...", {"step": -3}], np.s_[..., ::-3]),
    ([None, 2, "...", None], np.s_[None, 2, ..., None]),
    ([{"start": 10, "stop": -10, "step": -1}], np.s_[10:-10:-1]),   # bounds clamp, as NumPy
])
def test_getitem_negative_steps_and_new_axes(index, key):
    x = np.arange(20.0).reshape(5, 4)
    y = functions.getitem(Tensor(x, dtype="float64"), index=index)
    np.testing.assert_array_equal(y.data, x[key])
    seed = np.random.default_rng(0).standard_normal(y.shape)
    expected = np.zeros_like(x)
    expected[key] = seed
    np.testing.assert_array_equal(grad_of("getitem", x, index=index, seed=seed), expected)


def test_python_index_syntax_is_getitem():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), dtype="float64")
    a = np.arange(24.0).reshape(2, 3, 4)
    for key in (np.s_[1], np.s_[:, ::-1], np.s_[..., None, 2], np.s_[-1, 1:, ::2], np.s_[()]):
        np.testing.assert_array_equal(x[key].data, a[key])
    with pytest.raises(TypeError, match="take"):
        x[[0, 1]]


def test_variadic_calls_take_a_list_or_operands_one_by_one():
    a, b = Tensor([[1.0, 2.0]], dtype="float64"), Tensor([[3.0, 4.0]], dtype="float64")
    for y in (functions.concat([a, b], 1), functions.concat(a, b, axis=1), a.concat(b, axis=1)):
        np.testing.assert_array_equal(y.data, [[1, 2, 3, 4]])
    np.testing.assert_array_equal(functions.stack([a, b]).data, [[[1, 2]], [[3, 4]]])
    np.testing.assert_array_equal(functions.einsum("ij,kj->ik", a, b).data, [[11.0]])
    np.testing.assert_array_equal(functions.einsum("ij->", [a]).data, 3.0)
    y = Tensor([2.0, 4.0], dtype="float64")
    np.testing.assert_array_equal((1 / y).data, [0.5, 0.25])
    np.testing.assert_array_equal((y > 3).data, [0, 1])
    np.testing.assert_array_equal((3 > y).data, [1, 0])  # noqa: SIM300 (the reflected form)
    np.testing.assert_array_equal((y < 3).data, [1, 0])


def test_einsum_gradient_broadcasts_letters_only_one_operand_has():
    g = grad_of("einsum", np.ones((2, 3)), np.ones(3), equation="ij,k->i", seed=np.ones(2))
    np.testing.assert_array_equal(g, np.full((2, 3), 3.0))


# ---- errors: each with its code and path ------------------------------------------------

def node(op, args=("x",), **attrs):
    return {"id": "y", "op": op, "args": list(args), **({"attrs": attrs} if attrs else {})}


ERRORS = [
    ("getitem index out of range", node("getitem", index=[0, 4]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 1), "axis 1 of size 3"),
    ("getitem negative out of range", node("getitem", index=[-3]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 0), "axis 0 of size 2"),
    ("getitem too many entries", node("getitem", index=[0, 0, 0]), "bad_attribute",
     ("nodes", 0, "attrs", "index"), "rank 2"),
    ("getitem two ellipses", node("getitem", index=["...", "..."]), "bad_attribute",
     ("nodes", 0, "attrs", "index"), '"..."'),
    ("getitem zero step", node("getitem", index=[{"step": 0}]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 0, "step"), "zero"),
    ("getitem unknown slice key", node("getitem", index=[{"begin": 1}]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 0, "begin"), "begin"),
    ("getitem a float entry", node("getitem", index=[1.5]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 0), "integer"),
    ("getitem a string entry", node("getitem", index=["x"]), "bad_attribute",
     ("nodes", 0, "attrs", "index", 0), "integer"),
    ("getitem index not a list", node("getitem", index=1), "bad_attribute",
     ("nodes", 0, "attrs", "index"), "a list"),
    ("take index out of range", node("take", indices=[0, 2], axis=0), "bad_attribute",
     ("nodes", 0, "attrs", "indices", 1), "axis 0 of size 2"),
    ("take axis out of range", node("take", indices=[0], axis=2), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "rank 2"),
    ("concat without args", node("concat", args=()), "wrong_arity",
     ("nodes", 0, "args"), "1 or more"),
    ("concat mismatched shapes", node("concat", args=("x", "v")), "shape_mismatch",
     ("nodes", 0, "args"), "outside axis 0"),
    ("concat of a 0-d tensor", node("concat", args=("s",)), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "rank 0"),
    ("stack of two shapes", node("stack", args=("x", "v")), "shape_mismatch",
     ("nodes", 0, "args"), "one shape"),
    ("stack axis out of range", node("stack", args=("x", "x"), axis=3), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "rank 3"),
    ("einsum without ->", node("einsum", equation="ij"), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "explicit"),
    ("einsum with ...", node("einsum", equation="...->"), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "letters"),
    ("einsum operand count", node("einsum", equation="ij,jk->ik"), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "2 operand"),
    ("einsum repeated letter", node("einsum", equation="ii->i"), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "repeats"),
    ("einsum unknown output letter", node("einsum", equation="ij->k"), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "'k'"),
    ("einsum wrong rank", node("einsum", equation="i->i"), "shape_mismatch",
     ("nodes", 0, "args"), "rank 2"),
    ("einsum sizes disagree", node("einsum", args=("x", "v"), equation="ij,ij->"),
     "shape_mismatch", ("nodes", 0, "args"), "letter 'j'"),
    ("einsum equation not a string", node("einsum", equation=3), "bad_attribute",
     ("nodes", 0, "attrs", "equation"), "string"),
    ("squeeze an axis of size 3", node("squeeze", axis=1), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "size 3"),
    ("expand_dims axis out of range", node("expand_dims", axis=3), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "rank 3"),
    ("max of an empty axis", node("max", args=("e",), axis=0), "shape_mismatch",
     ("nodes", 0, "args"), "empty"),
    ("cross_entropy shapes differ", node("cross_entropy", args=("x", "v")), "shape_mismatch",
     ("nodes", 0, "args"), "same shape"),
    ("cross_entropy of 0-d", node("cross_entropy", args=("s", "s")), "bad_attribute",
     ("nodes", 0, "attrs", "axis"), "rank 0"),
    ("bce shapes differ", node("binary_cross_entropy_with_logits", args=("x", "v")),
     "shape_mismatch", ("nodes", 0, "args"), "same shape"),
    ("where shapes", node("where", args=("x", "v", "x")), "shape_mismatch",
     ("nodes", 0, "args"), "broadcast"),
    ("where cond a number", node("where", args=(1, "x", "x")), "validation_error",
     ("nodes", 0, "args", 0), "an id"),
    ("clip bound not a number", node("clip", min="0"), "bad_attribute",
     ("nodes", 0, "attrs", "min"), "number or null"),
    ("internal op by name", node("scatter_add", indices=[0], axis=0, shape=[2, 3]),
     "unknown_op", ("nodes", 0, "op"), "unknown op"),
]
ARRAYS = {"x": np.ones((2, 3)), "v": np.ones((2, 4)), "s": np.ones(()), "e": np.ones((0, 2))}


@pytest.mark.parametrize("nodes, code, path, words", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors_carry_code_and_path(nodes, code, path, words):
    used = [a for a in nodes["args"] if isinstance(a, str)]
    with pytest.raises(autograd.AutogradError) as e:
        autograd.evaluate([nodes], {k: ARRAYS[k] for k in used})
    assert e.value.code == code
    assert e.value.path == path
    if words:
        assert words in str(e.value)


def test_internal_ops_stay_out_of_the_public_registry():
    assert {"scatter", "scatter_add"} <= set(INTERNAL)
    assert not set(INTERNAL) & set(OPS)
    assert not hasattr(functions, "scatter") and not hasattr(Tensor, "scatter_add")
