"""The seed's worked example, and one regression test per defect of PROTOCOL.md §6."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import Tensor, functions


def test_worked_example():
    """y = (x² + 1)³ at x = 2: dy/dx = 3 (x² + 1)² · 2x = 3 · 25 · 4 = 300."""
    for dtype in ("float32", "float64"):
        x = Tensor(2.0, requires_grad=True, dtype=dtype)
        y = (x ** 2 + 1) ** 3
        y.backward()
        assert float(y.data) == 125.0
        assert float(x.grad) == 300.0


# ---- sigmoid_backward: s (1 - s) of the output, not the sigmoid applied again ------------

@pytest.mark.parametrize("z", [0.0, 1.0, -2.0, 4.0])
def test_sigmoid_gradient_uses_the_output(z):
    s = 1 / (1 + np.exp(-z))
    x = Tensor(z, requires_grad=True, dtype="float64")
    functions.sigmoid(x).backward()
    assert float(x.grad) == pytest.approx(s * (1 - s), rel=1e-12)
    twice = 1 / (1 + np.exp(-s))
    assert float(x.grad) != pytest.approx(twice * (1 - twice), rel=1e-3)


def test_sigmoid_gradient_in_a_graph():
    r = autograd.evaluate([{"id": "s", "op": "sigmoid", "args": ["x"]}], {"x": np.zeros(3)},
                          requires_grad=["x"], grad={"of": "s", "seed": np.ones(3)})
    np.testing.assert_allclose(r.gradients["x"], [0.25, 0.25, 0.25], rtol=1e-7)


# ---- mse_backward: the forward is a mean, so the gradient divides by n -------------------

@pytest.mark.parametrize("shape", [(1,), (4,), (2, 3), (2, 2, 5)], ids=str)
def test_mse_gradient_divides_by_n(shape):
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    pred = Tensor(p, requires_grad=True, dtype="float64")
    target = Tensor(t, requires_grad=True, dtype="float64")
    loss = functions.mse_loss(pred, target)
    assert float(loss.data) == pytest.approx(np.mean((p - t) ** 2), rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(pred.grad, 2 * (p - t) / p.size, rtol=1e-12)
    np.testing.assert_allclose(target.grad, -2 * (p - t) / p.size, rtol=1e-12)


def test_mse_gradient_scales_with_the_incoming_gradient():
    p = Tensor([1.0, 3.0], requires_grad=True, dtype="float64")
    (functions.mse_loss(p, Tensor([0.0, 0.0], dtype="float64")) * 5).backward()
    np.testing.assert_allclose(p.grad, [5.0, 15.0])  # 5 · 2 · (1, 3) / 2


# ---- matmul_backward: swap the last two axes only; sum broadcast batch dims --------------

@pytest.mark.parametrize("sa, sb", [((2, 3, 4), (2, 4, 5)), ((2, 2, 3, 4), (2, 2, 4, 3)),
                                    ((3, 4), (2, 4, 5)), ((1, 3, 4), (5, 4, 2)),
                                    ((5, 3, 4), (4, 2))], ids=str)
def test_batched_matmul_gradient(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    x = Tensor(a, requires_grad=True, dtype="float64")
    w = Tensor(b, requires_grad=True, dtype="float64")
    y = x @ w
    g = rng.standard_normal(y.shape)
    y.backward(g)
    # per batch element: dX = G Wᵀ, dW = Xᵀ G, then summed over the broadcast batch dims
    batch = y.shape[:-2]
    ab = np.broadcast_to(a, batch + sa[-2:])
    bb = np.broadcast_to(b, batch + sb[-2:])
    dx = np.zeros(batch + sa[-2:])
    dw = np.zeros(batch + sb[-2:])
    for idx in np.ndindex(batch):
        dx[idx] = g[idx] @ bb[idx].T
        dw[idx] = ab[idx].T @ g[idx]
    assert x.grad.shape == sa and w.grad.shape == sb
    np.testing.assert_allclose(x.grad, _sum_to(dx, sa), rtol=1e-10)
    np.testing.assert_allclose(w.grad, _sum_to(dw, sb), rtol=1e-10)


def _sum_to(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, d in enumerate(shape) if d == 1), keepdims=True)


# ---- sum/mean backward: negative and unordered axes -------------------------------------

@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [[-1], -1, [2, 0], [-1, 0], [-2], [1, -3], [-1, -3, 1]], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reduction_gradient_with_negative_and_unordered_axes(name, axis, keepdims):
    a = np.arange(24.0).reshape(2, 3, 4)
    x = Tensor(a, requires_grad=True, dtype="float64")
    y = getattr(x, name)(axis=axis, keepdims=keepdims)
    ax = tuple(axis) if isinstance(axis, list) else (axis,)
    ref = np.sum(a, axis=ax, keepdims=keepdims)
    assert y.shape == ref.shape
    g = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(g)
    # each input element receives the cotangent of the output it was reduced into
    n = 1 if name == "sum" else np.prod([a.shape[i] for i in ax])
    expected = np.broadcast_to(g if keepdims else np.expand_dims(g, ax), a.shape) / n
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


# ---- float64 is honoured, not forced to float32 -----------------------------------------

def test_float64_is_honoured_by_tensors():
    x = Tensor(1 + 1e-10, requires_grad=True, dtype="float64")
    y = (x - 1) * 1e10
    assert y.dtype == np.float64
    assert float(y.data) == pytest.approx(1.0, rel=1e-5)   # float32 would give 0
    y.backward()
    assert x.grad.dtype == np.float64 and float(x.grad) == 1e10


def test_float64_is_honoured_by_the_graph_runner():
    nodes = [{"id": "d", "op": "sub", "args": ["x", 1]},
             {"id": "y", "op": "mul", "args": ["d", 1e10]}]
    r = autograd.evaluate(nodes, {"x": np.float64(1 + 1e-10)}, requires_grad=["x"],
                          grad={"of": "y"}, dtype="float64")
    assert r.outputs["y"].dtype == np.float64 and r.gradients["x"].dtype == np.float64
    assert float(r.outputs["y"]) == pytest.approx(1.0, rel=1e-5)
    r32 = autograd.evaluate(nodes, {"x": np.float64(1 + 1e-10)}, dtype="float32")
    assert r32.outputs["y"].dtype == np.float32 and float(r32.outputs["y"]) == 0.0


def test_default_dtype_is_float32():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    r = autograd.evaluate([{"id": "y", "op": "exp", "args": ["x"]}], {"x": np.zeros(2)})
    assert r.outputs["y"].dtype == np.float32


# ---- deep graphs: 100,000 nodes, iteratively -------------------------------------------

DEPTH = 100_000
FACTOR = 1.00001


def _chain_expected(x0: float) -> tuple[float, float]:
    value, slope = x0, 1.0
    for i in range(DEPTH):
        if i % 2:
            value, slope = -value, -slope
        else:
            value, slope = value * FACTOR, slope * FACTOR
    return value, slope


def test_deep_chain_in_the_graph_runner():
    nodes = [{"id": f"n{i}", "op": "neg" if i % 2 else "mul",
              "args": [f"n{i - 1}" if i else "x"] + ([] if i % 2 else [FACTOR])}
             for i in range(DEPTH)]
    value, slope = _chain_expected(0.5)
    r = autograd.evaluate(nodes, {"x": np.array([0.5, 1.0])}, requires_grad=["x"],
                          grad={"of": f"n{DEPTH - 1}", "seed": np.ones(2)}, dtype="float64")
    np.testing.assert_allclose(r.outputs[f"n{DEPTH - 1}"], [value, 2 * value], rtol=1e-9)
    np.testing.assert_allclose(r.gradients["x"], [slope, slope], rtol=1e-9)
    assert r.stats["nodes"] == DEPTH


def test_deep_chain_with_tensor_backward():
    x = Tensor([0.5, 1.0], requires_grad=True, dtype="float64")
    y = x
    for i in range(DEPTH):
        y = -y if i % 2 else y * FACTOR
    value, slope = _chain_expected(0.5)
    np.testing.assert_allclose(y.data, [value, 2 * value], rtol=1e-9)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [slope, slope], rtol=1e-9)
    del y  # releasing the chain must not recurse either
