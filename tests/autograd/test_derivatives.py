"""Every derivative of every op (PROTOCOL.md §8), table-driven over test_ops.CASES.

For each op `y = op(a0, a1, ...)` the graph `f = sum(v * y)` (v a random cotangent) is
planned and run with every derivative at once, and each is checked against central
differences in float64: the JVP against differences of the values, the HVP against
differences of the (separately checked) gradient, Jacobians in both modes against a
numerical Jacobian, batched directions against one direction at a time. The op reads
its operands through an intermediate node, so a `saves` that promises too little frees
a value a rule still needs and fails here instead of answering a 500.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from autograd import Leaf, LimitExceeded, SeedRequired, ShapeMismatch, UnknownId

from .test_ops import CASES, SETTINGS

EPS = 1e-6


def op_graph(name: str, data) -> tuple[list[dict], dict[str, np.ndarray], tuple]:
    """Operands drawn from the op's table row, then the graph
    a_i -> b_i = a_i * 1.0 (an intermediate) -> y = op(b...) -> f = sum(v * y)."""
    args, attrs = data.draw(CASES[name].args)
    ids = [f"a{i}" for i in range(len(args))]
    nodes = [{"id": f"b{i}", "op": "mul", "args": [a, 1.0]} for i, a in enumerate(ids)]
    nodes.append({"id": "y", "op": name, "args": [f"b{i}" for i in range(len(args))],
                  **({"attrs": attrs} if attrs else {})})
    shape = np.shape(CASES[name].ref(*args, **attrs))
    nodes += [{"id": "p", "op": "mul", "args": ["y", "v"]}, {"id": "f", "op": "sum", "args": ["p"]}]
    inputs = dict(zip(ids, args, strict=True))
    inputs["v"] = np.random.default_rng(1).standard_normal(shape)
    return nodes, inputs, shape


def params(inputs) -> list[str]:
    """The op's operands (a0, a1, ...), not the cotangent v."""
    return [k for k in inputs if k.startswith("a")]


def run(nodes, inputs, **kw):
    return autograd.evaluate(nodes, inputs, requires_grad=params(inputs), dtype="float64", **kw)


def shifted(inputs, tangents, eps):
    return {k: a + eps * tangents[k] if k in tangents else a for k, a in inputs.items()}


def directions(inputs, seed=2, k=None):
    rng = np.random.default_rng(seed)
    lead = () if k is None else (k,)
    return {n: rng.standard_normal(lead + np.shape(inputs[n])) for n in params(inputs)}


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_jvp_and_hvp_match_central_differences(name, data):
    nodes, inputs, _ = op_graph(name, data)
    t = directions(inputs)
    r = run(nodes, inputs, outputs=["y"], grad={"of": "f"},
            jvp={"of": ["y", "f"], "tangents": t}, hvp={"of": "f", "tangents": t})

    def value(eps):
        return run(nodes, shifted(inputs, t, eps), outputs=["y", "f"]).outputs

    def grads(eps):
        return run(nodes, shifted(inputs, t, eps), grad={"of": "f"}).gradients

    plus, minus = value(EPS), value(-EPS)
    for y in ("y", "f"):
        np.testing.assert_allclose(r.jvp[y], (plus[y] - minus[y]) / (2 * EPS), rtol=1e-5,
                                   atol=1e-6, err_msg=f"jvp of {y}")
    gp, gm = grads(EPS), grads(-EPS)
    for a in t:
        assert r.hvp[a].shape == inputs[a].shape
        np.testing.assert_allclose(r.hvp[a], (gp[a] - gm[a]) / (2 * EPS), rtol=1e-5, atol=1e-6,
                                   err_msg=f"hvp wrt {a}")


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_batched_directions_equal_one_at_a_time(name, data):
    nodes, inputs, shape = op_graph(name, data)
    k = 3
    seeds = np.random.default_rng(5).standard_normal((k, *shape))
    tangents = directions(inputs, k=k)
    r = run(nodes, inputs, grad={"of": "y", "seed": seeds, "batch": True},
            jvp={"of": ["y"], "tangents": tangents, "batch": True},
            hvp={"of": "f", "tangents": tangents, "batch": True})
    for i in range(k):
        one = {n: v[i] for n, v in tangents.items()}
        s = run(nodes, inputs, grad={"of": "y", "seed": seeds[i]},
                jvp={"of": ["y"], "tangents": one}, hvp={"of": "f", "tangents": one})
        for a in s.gradients:
            np.testing.assert_allclose(r.gradients[a][i], s.gradients[a], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(r.hvp[a][i], s.hvp[a], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r.jvp["y"][i], s.jvp["y"], rtol=1e-10, atol=1e-12)


def numerical_jacobian(nodes, inputs, y, x):
    out_shape = run(nodes, inputs, outputs=[y]).outputs[y].shape
    jac = np.zeros(out_shape + inputs[x].shape)
    for idx in np.ndindex(inputs[x].shape):
        d = np.zeros(inputs[x].shape)
        d[idx] = EPS
        plus = run(nodes, shifted(inputs, {x: d}, 1.0), outputs=[y]).outputs[y]
        minus = run(nodes, shifted(inputs, {x: d}, -1.0), outputs=[y]).outputs[y]
        jac[(...,) + idx] = (plus - minus) / (2 * EPS)
    return jac


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_jacobians_in_both_modes(name, data):
    nodes, inputs, _ = op_graph(name, data)
    ids = params(inputs)
    r = run(nodes, inputs, jacobian={"of": ["y", "f"], "wrt": ids})
    for x in ids:
        for y in ("y", "f"):
            want = numerical_jacobian(nodes, inputs, y, x)
            np.testing.assert_allclose(r.jacobians[y][x], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"d{y}/d{x}")
    # one mode each way: a scalar of many inputs is reverse, many outputs of one scalar forward
    assert autograd.plan(nodes, {k: Leaf(np.shape(a)) for k, a in inputs.items()},
                         jacobian={"of": ["f"], "wrt": ids}).jacobian.mode == "reverse"


@pytest.mark.parametrize("mode_of", [["s"], ["y"]], ids=["reverse", "forward"])
def test_jacobian_modes_agree(mode_of):
    """y = tanh(W x) has 5 outputs and 3 + 15 inputs (reverse); s = y * t of 1 input
    x0 (forward): each mode against the numerical Jacobian."""
    rng = np.random.default_rng(3)
    inputs = {"W": rng.standard_normal((5, 3)), "x": rng.standard_normal((3, 1)),
              "t": np.array(0.7)}
    nodes = [{"id": "h", "op": "matmul", "args": ["W", "x"]},
             {"id": "y", "op": "tanh", "args": ["h"]},
             {"id": "s", "op": "mul", "args": ["y", "t"]}]
    wrt = ["t"] if mode_of == ["s"] else ["W", "x"]
    p = autograd.plan(nodes, {k: Leaf(a.shape) for k, a in inputs.items()},
                      jacobian={"of": mode_of, "wrt": wrt})
    assert p.jacobian.mode == ("forward" if mode_of == ["s"] else "reverse")
    r = autograd.evaluate(nodes, inputs, jacobian={"of": mode_of, "wrt": wrt}, dtype="float64")
    for x in wrt:
        np.testing.assert_allclose(r.jacobians[mode_of[0]][x],
                                   numerical_jacobian(nodes, inputs, mode_of[0], x),
                                   rtol=1e-6, atol=1e-8)


def test_hvp_block_of_other_inputs():
    """wrt ≠ tangents: ∂²f/∂w∂x · v, UM-Bridge's ApplyHessian with inWrt1 ≠ inWrt2."""
    rng = np.random.default_rng(4)
    x, w, v = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    nodes = [{"id": "p", "op": "mul", "args": ["x", "w"]},
             {"id": "s", "op": "sin", "args": ["p"]},
             {"id": "f", "op": "sum", "args": ["s"]}]
    r = autograd.evaluate(nodes, {"x": x, "w": w}, dtype="float64",
                          hvp={"of": "f", "wrt": ["w"], "tangents": {"x": v}})
    # f = Σ sin(x w): ∂²f/∂w_i∂x_i = cos(x w) - x w sin(x w), diagonal
    want = (np.cos(x * w) - x * w * np.sin(x * w)) * v
    np.testing.assert_allclose(r.hvp["w"], want, rtol=1e-12)


def test_all_four_in_one_request_share_one_forward_pass():
    rng = np.random.default_rng(6)
    inputs = {"x": rng.standard_normal((4, 3)), "w": rng.standard_normal((3, 2))}
    nodes = [{"id": "h", "op": "matmul", "args": ["x", "w"]},
             {"id": "a", "op": "sigmoid", "args": ["h"]},
             {"id": "loss", "op": "mean", "args": ["a"]}]
    t = {"w": rng.standard_normal((3, 2))}
    r = autograd.evaluate(nodes, inputs, requires_grad={"w"}, dtype="float64",
                          grad={"of": "loss"}, jvp={"of": ["loss"], "tangents": t},
                          hvp={"of": "loss", "tangents": t}, jacobian={"of": ["a"], "wrt": ["w"]})
    np.testing.assert_allclose(r.jvp["loss"], np.sum(r.gradients["w"] * t["w"]), rtol=1e-12)
    np.testing.assert_allclose(r.jacobians["a"]["w"],
                               numerical_jacobian(nodes, inputs, "a", "w"), rtol=1e-6, atol=1e-9)
    assert r.hvp["w"].shape == (3, 2)
    assert r.stats["nodes"] == 3


@pytest.mark.parametrize("derivative", ["grad", "jvp"])
def test_long_chain(derivative):
    """100,000 nodes: no recursion anywhere, forward mode included."""
    n = 100_000
    nodes = [{"id": f"n{i}", "op": "sin" if i % 2 else "mul",
              "args": [f"n{i - 1}" if i else "x"] + ([] if i % 2 else [1.0])}
             for i in range(n)]
    kw = ({"grad": {"of": f"n{n - 1}"}} if derivative == "grad"
          else {"jvp": {"of": [f"n{n - 1}"], "tangents": {"x": np.array(1.0)}}})
    r = autograd.evaluate(nodes, {"x": np.array(0.5)}, requires_grad={"x"}, dtype="float64",
                          outputs=[f"n{n - 1}"], **kw)
    got = r.gradients["x"] if derivative == "grad" else r.jvp[f"n{n - 1}"]
    x, d = 0.5, 1.0
    for _ in range(n // 2):
        d *= np.cos(x)
        x = np.sin(x)
    np.testing.assert_allclose(got, d, rtol=1e-9)


# ---- what is refused, from shapes, before anything runs ----------------------------------

NODES = [{"id": "y", "op": "sin", "args": ["x"]}, {"id": "f", "op": "sum", "args": ["y"]}]
X = {"x": Leaf((3,), True)}

REFUSED = [
    ({"jvp": {"tangents": {"z": (3,)}}}, UnknownId, ("jvp", "tangents", "z")),
    ({"jvp": {"tangents": {"y": (3,)}}}, UnknownId, ("jvp", "tangents", "y")),
    ({"jvp": {"tangents": {"x": (2,)}}}, ShapeMismatch, ("jvp", "tangents", "x")),
    ({"jvp": {"tangents": {"x": (3,)}, "batch": True}}, ShapeMismatch, ("jvp", "tangents", "x")),
    ({"jvp": {"tangents": {"x": (3,)}, "of": ["q"]}}, UnknownId, ("jvp", "of", 0)),
    ({"hvp": {"of": "y", "tangents": {"x": (3,)}}}, SeedRequired, ("hvp",)),
    ({"hvp": {"of": "f", "seed": (3,), "tangents": {"x": (3,)}}}, ShapeMismatch, ("hvp", "seed")),
    ({"hvp": {"of": "nope", "tangents": {}}}, UnknownId, ("hvp", "of")),
    ({"hvp": {"of": "f", "wrt": ["y"], "tangents": {}}}, UnknownId, ("hvp", "wrt", 0)),
    ({"jacobian": {"of": ["f"], "wrt": ["q"]}}, UnknownId, ("jacobian", "wrt", 0)),
    ({"jacobian": {"of": ["q"], "wrt": ["x"]}}, UnknownId, ("jacobian", "of", 0)),
    ({"grad": {"of": "f", "batch": True}}, SeedRequired, ("grad", "seed")),
    ({"grad": {"of": "f", "batch": True}, "seed_shape": (2, 3)}, ShapeMismatch, ("grad", "seed")),
]


@pytest.mark.parametrize("kw, error, path", REFUSED, ids=lambda v: str(v)[:60])
def test_refused_with_code_and_path(kw, error, path):
    with pytest.raises(error) as e:
        autograd.plan(NODES, X, **kw)
    assert e.value.path == path


def test_huge_jacobian_is_refused_in_milliseconds():
    limits = autograd.Limits(max_elements=10**8, max_total_bytes=2**32)
    nodes = [{"id": "y", "op": "sin", "args": ["x"]}]
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded) as e:
        autograd.plan(nodes, {"x": Leaf((10**6,), True)}, jacobian={"of": ["y"], "wrt": ["x"]},
                      limits=limits)
    assert time.perf_counter() - t0 < 0.05
    assert e.value.code == "tensor_too_large" and e.value.path == ("jacobian",)


def test_extra_passes_are_costed():
    leaves = {"x": Leaf((1000,), True)}
    base = autograd.plan(NODES, leaves, grad={"of": "f"}).cost
    jvp = autograd.plan(NODES, leaves, grad={"of": "f"},
                        jvp={"tangents": {"x": (16, 1000)}, "batch": True}).cost
    hvp = autograd.plan(NODES, leaves, hvp={"of": "f", "tangents": {"x": (1000,)}}).cost
    assert jvp.flops > base.flops and jvp.peak_bytes > base.peak_bytes + 16 * 8000
    assert hvp.flops > base.flops
    with pytest.raises(LimitExceeded):
        autograd.plan(NODES, leaves, grad={"of": "f"}, jvp={"tangents": {"x": (16, 1000)},
                      "batch": True}, limits=autograd.Limits(max_total_bytes=jvp.peak_bytes - 1))


def test_gradient_temporary_of_broadcast_matmul_is_counted():
    """x (1342, 1, 1000) @ y (1000, 1000): y's gradient passes through a (1342, 1000, 1000)
    product before it is summed; the limit sees it."""
    nodes = [{"id": "h", "op": "matmul", "args": ["x", "y"]},
             {"id": "f", "op": "sum", "args": ["h"]}]
    leaves = {"x": Leaf((1342, 1, 1000)), "y": Leaf((1000, 1000), True)}
    with pytest.raises(LimitExceeded) as e:
        autograd.plan(nodes, leaves, grad={"of": "f"},
                      limits=autograd.Limits(max_elements=10**8))
    assert e.value.code == "tensor_too_large"
