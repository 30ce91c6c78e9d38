"""Shared helpers for the engine's tests: the central-difference gradient check."""

from __future__ import annotations

import numpy as np
import pytest

from autograd import Tensor

EPS = 1e-6


def numerical_vjp(f, arrays: list[np.ndarray], i: int, eps: float = EPS) -> np.ndarray:
    """d f / d arrays[i] by central differences, f a scalar function of float64 arrays."""
    out = np.zeros_like(arrays[i])
    for idx in np.ndindex(arrays[i].shape):
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[i][idx] += eps
        minus[i][idx] -= eps
        out[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return out


def check_grads(fn, *arrays, rtol: float = 1e-5, atol: float = 1e-6, seed: int = 0):
    """Compare the engine's VJP with central differences of <v, fn(x)>, v a random cotangent.

    `fn` maps float64 Tensors to a Tensor. Every argument requires a gradient; each
    gradient must have exactly its argument's shape. Returns the engine's gradients.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    xs = [Tensor(a, requires_grad=True, dtype="float64") for a in arrays]
    y = fn(*xs)
    v = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(v)

    def inner(*values):
        return float(np.sum(v * fn(*[Tensor(a, dtype="float64") for a in values]).data))

    for i, (a, x) in enumerate(zip(arrays, xs, strict=True)):
        assert x.grad is not None, f"argument {i} got no gradient"
        assert np.shape(x.grad) == a.shape, f"argument {i}: gradient shape {np.shape(x.grad)}"
        np.testing.assert_allclose(x.grad, numerical_vjp(inner, arrays, i), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of argument {i}")
    return [x.grad for x in xs]


@pytest.fixture(scope="session", name="check_grads")
def check_grads_fixture():
    """`check_grads(fn, *arrays)` (session-scoped, so hypothesis tests may use it)."""
    return check_grads
