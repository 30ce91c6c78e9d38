"""The Tensor API: kinds, operators, generated methods, backward() as torch.Tensor.backward."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import (
    OPS,
    AutogradError,
    BadTensor,
    DtypeMismatch,
    Kind,
    SeedRequired,
    ShapeMismatch,
    Tensor,
    functions,
)


def f64(data, requires_grad=True):
    return Tensor(data, requires_grad=requires_grad, dtype="float64")


# ---- kinds and requires_grad ------------------------------------------------------------

def test_kinds():
    x, w = Tensor([1.0, 2.0]), Tensor([3.0, 4.0], requires_grad=True)
    assert x.kind is Kind.INPUT and not x.requires_grad
    assert w.kind is Kind.PARAMETER and w.requires_grad
    for y in (x * w, x + 1, -x, x.exp()):
        assert y.kind is Kind.INTERMEDIATE
    assert x.grad is None and w.grad is None
    assert {k.name for k in Kind} == {"INPUT", "PARAMETER", "INTERMEDIATE"}


def test_requires_grad_propagates():
    x, w = Tensor([1.0, 2.0]), Tensor([3.0, 4.0], requires_grad=True)
    assert (x * w).requires_grad and (w + x).requires_grad
    assert (x.reshape((1, 2)) @ w.reshape((2, 1))).requires_grad
    assert not (x * 2).requires_grad and not x.exp().sum().requires_grad
    assert ((x * 2).exp() + w).requires_grad


def test_only_what_requires_grad_gets_a_gradient():
    x, w = Tensor([1.0, 2.0]), Tensor([3.0, 4.0], requires_grad=True)
    (x * w).sum().backward()
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, [1.0, 2.0])


def test_backward_of_a_tensor_that_requires_no_gradient_raises():
    with pytest.raises(AutogradError):
        Tensor([1.0]).exp().backward()


def test_bad_data_and_dtype():
    with pytest.raises(BadTensor) as e:
        Tensor([[1.0, 2.0], [3.0]])
    assert e.value.code == "bad_tensor"
    with pytest.raises(DtypeMismatch):
        Tensor([1, 2], dtype="int32")
    assert Tensor([1, 2]).dtype == np.float32
    assert Tensor(np.arange(3.0), dtype="float64").dtype == np.float64


def test_mixed_dtypes_raise():
    a, b = Tensor([1.0], dtype="float32"), Tensor([1.0], dtype="float64")
    for build in (lambda: a + b, lambda: b - a, lambda: a * b, lambda: functions.mse_loss(a, b)):
        with pytest.raises(DtypeMismatch):
            build()


# ---- operators, with numbers on either side ---------------------------------------------

A = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
B = np.array([[2.0, 1.0, -0.5], [0.5, -2.0, 1.0]])
OPERATORS = [
    ("x + y", lambda x, y: x + y, lambda a, b: a + b),
    ("x - y", lambda x, y: x - y, lambda a, b: a - b),
    ("x * y", lambda x, y: x * y, lambda a, b: a * b),
    ("x @ y.T", lambda x, y: x @ y.T(), lambda a, b: a @ b.T),
    ("x ** 2 + y", lambda x, y: x ** 2 + y, lambda a, b: a ** 2 + b),
    ("-x * y", lambda x, y: -x * y, lambda a, b: -a * b),
    ("2 - x * 3 + y * 1.0", lambda x, y: 2 - x * 3 + y * 1.0, lambda a, b: 2 - a * 3 + b),
    ("1.5 * x - y + 4", lambda x, y: 1.5 * x - y + 4, lambda a, b: 1.5 * a - b + 4),
    ("x ** 3 * y ** -1", lambda x, y: x ** 3 * (y ** -1), lambda a, b: a ** 3 / b),
]


@pytest.mark.parametrize("fn, ref", [o[1:] for o in OPERATORS], ids=[o[0] for o in OPERATORS])
def test_operators(fn, ref, check_grads):
    y = fn(f64(A, False), f64(B, False))
    assert isinstance(y, Tensor)
    np.testing.assert_allclose(y.data, ref(A, B), rtol=1e-12)
    check_grads(fn, A, B)


def test_operators_with_unsupported_operands():
    x = f64(A)
    with pytest.raises(TypeError):
        x + "1"
    with pytest.raises(TypeError):
        x ** x
    with pytest.raises(TypeError):
        x + True  # a bool is not a number literal


def test_T_reverses_every_axis(check_grads):
    a = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(f64(a, False).T().data, a.T)
    check_grads(lambda x: x.T(), a)


def test_reshape_method(check_grads):
    a = np.arange(6.0).reshape(2, 3)
    x = f64(a, False)
    assert x.reshape((3, -1)).shape == (3, 2)
    assert x.reshape([-1]).shape == (6,)
    assert x.reshape(shape=[1, 6, 1]).shape == (1, 6, 1)
    check_grads(lambda t: t.reshape((3, -1)) * f64(np.arange(6.0).reshape(3, 2), False), a)


# ---- generated methods and module functions --------------------------------------------

def test_every_op_is_a_method_and_a_function():
    for name in OPS:
        assert callable(getattr(Tensor, name)), name
        assert callable(getattr(functions, name)), name
        assert OPS[name].doc in getattr(functions, name).__doc__


def test_generated_methods(check_grads):
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]])
    x = f64(a, False)
    s = x.sum(axis=0, keepdims=True)
    assert s.shape == (1, 3)
    np.testing.assert_array_equal(s.data, a.sum(axis=0, keepdims=True))
    np.testing.assert_array_equal(x.sum(0).data, a.sum(axis=0))
    np.testing.assert_allclose(x.mean(axis=[1, 0]).data, a.mean())
    sm = x.softmax(-1)
    np.testing.assert_allclose(sm.data, np.exp(a) / np.exp(a).sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(x.softmax(axis=0).data.sum(axis=0), 1.0, rtol=1e-12)
    t = f64(np.zeros_like(a), False)
    np.testing.assert_allclose(x.mse_loss(t).data, np.mean(a ** 2), rtol=1e-12)
    np.testing.assert_allclose(x.pow(0.5).data, np.sqrt(a), rtol=1e-12)
    check_grads(lambda p, q: p.sum(axis=0, keepdims=True).softmax(-1).mse_loss(q.mean(0, True)),
                a, a[::-1].copy())


def test_methods_refuse_bad_attributes():
    x = f64(np.ones((2, 3)))
    with pytest.raises(autograd.BadAttribute):
        x.sum(axis=2)
    with pytest.raises(autograd.BadAttribute):
        x.sum(axes=0)
    with pytest.raises(autograd.BadAttribute):
        x.softmax(axis=True)
    with pytest.raises(TypeError):
        x.sum(0, True, 1)  # more positional arguments than attributes
    with pytest.raises(ShapeMismatch):
        x @ x
    with pytest.raises(autograd.ArityError):
        autograd.apply(OPS["exp"], x, x)


def test_module_functions(check_grads):
    a = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(functions.exp(f64(a, False)).data, np.exp(a), rtol=1e-12)
    np.testing.assert_allclose(functions.add(1.0, f64(a, False)).data, a + 1)
    np.testing.assert_allclose(functions.pow(f64(a, False), exponent=2).data, a ** 2)
    check_grads(lambda x: functions.tanh(functions.exp(x)), a)


# ---- backward() ------------------------------------------------------------------------

def test_backward_of_a_non_scalar_needs_a_gradient():
    x = f64([1.0, 2.0])
    with pytest.raises(SeedRequired) as e:
        (x * 2).backward()
    assert e.value.code == "seed_required"


@pytest.mark.parametrize("gradient", [np.ones(3), np.ones((2, 1)), np.ones((1, 2)), 1.0],
                         ids=str)
def test_backward_with_a_gradient_of_the_wrong_shape(gradient):
    x = f64([1.0, 2.0])
    with pytest.raises(ShapeMismatch) as e:
        (x * 2).backward(gradient)
    assert e.value.code == "shape_mismatch"


def test_backward_with_a_gradient():
    x = f64([1.0, 2.0])
    (x * 3).backward(np.array([1.0, -2.0]))
    np.testing.assert_array_equal(x.grad, [3.0, -6.0])
    z = f64([1.0, 2.0])
    (z * 3).backward(Tensor([2.0, 2.0], dtype="float64"))
    np.testing.assert_array_equal(z.grad, [6.0, 6.0])


def test_one_element_tensors_need_no_gradient():
    x = f64([[2.0]])
    (x * x).backward()
    assert x.grad.shape == (1, 1) and float(x.grad[0, 0]) == 4.0


def test_grads_accumulate_across_backward_calls():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])    # 2 · 2x
    (x * 10).sum().backward()
    np.testing.assert_array_equal(x.grad, [14.0, 18.0])


def test_accumulated_gradient_does_not_alias_the_caller_seed():
    x = f64([1.0, 2.0])
    seed = np.array([1.0, 1.0])
    (x + 0).backward(seed)
    (x + 0).backward(seed)
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    np.testing.assert_array_equal(seed, [1.0, 1.0])


# ---- graphs with shared values: gradients from every path, in any order -----------------

def test_value_used_twice_in_one_op():
    x = f64(3.0)
    (x * x).backward()
    assert float(x.grad) == 6.0
    z = f64(3.0)
    (z + z).backward()
    assert float(z.grad) == 2.0


def test_value_used_on_paths_of_different_depth():
    """y = a + 2a with a = 3x: dy/dx = 9. `a` must receive both contributions before it
    passes its gradient on (parents strictly before children in the sweep)."""
    x = f64(1.0)
    a = x * 3
    b = a * 2
    y = a + b
    y.backward()
    assert float(x.grad) == 9.0


def test_value_used_on_paths_of_different_depth_reversed_operands():
    x = f64(1.0)
    a = x * 3
    b = a * 2
    (b + a).backward()
    assert float(x.grad) == 9.0


@pytest.mark.parametrize("seed", range(40))
def test_random_dags_match_central_differences(seed, check_grads):
    """Random DAGs of elementwise ops reusing earlier values: the Tensor API against
    central differences and against the graph runner, which orders nodes itself."""
    rng = np.random.default_rng(seed)
    unary = ["sin", "tanh", "sigmoid", "neg", "cos"]
    binary = ["add", "sub", "mul"]
    recipe = []
    for i in range(8):
        if i and rng.random() < 0.6:
            j, k = rng.integers(0, i + 1, size=2)
            recipe.append((binary[rng.integers(3)], int(j), int(k)))
        else:
            recipe.append((unary[rng.integers(5)], int(rng.integers(0, i + 1)), None))

    def build(x):
        values = [x]
        for name, j, k in recipe:
            args = (values[j],) if k is None else (values[j], values[k])
            values.append(getattr(functions, name)(*args))
        return functions.sum(functions.add(values[-1], values[len(values) // 2]))

    a = rng.standard_normal(4)
    check_grads(build, a)
    x = f64(a)
    build(x).backward()

    ids = ["x"] + [f"v{i}" for i in range(len(recipe))]
    nodes = [{"id": ids[i + 1], "op": name, "args": [ids[j]] + ([] if k is None else [ids[k]])}
             for i, (name, j, k) in enumerate(recipe)]
    nodes += [{"id": "s", "op": "add", "args": [ids[-1], ids[len(ids) // 2]]},
              {"id": "y", "op": "sum", "args": ["s"]}]
    r = autograd.evaluate(nodes[::-1], {"x": a}, requires_grad=["x"], grad={"of": "y"},
                          dtype="float64")
    np.testing.assert_allclose(x.grad, r.gradients["x"], rtol=1e-12, atol=1e-12)
