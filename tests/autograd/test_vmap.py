"""vmap (PROTOCOL.md §11) for every op of the table: slice i of a batched run equals a run
of slice i, for outputs, per-example gradients, JVPs, HVPs and Jacobians; shared inputs
included. Examples never mix: each is checked against a run of its own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from autograd import AutogradError, Leaf, LimitExceeded, ShapeMismatch, UnknownId

from .test_derivatives import op_graph, params
from .test_ops import CASES, SETTINGS

B = 3


def run(nodes, inputs, **kw):
    return autograd.evaluate(nodes, inputs, requires_grad=params(inputs), dtype="float64",
                             outputs=["y", "f"], **kw)


def derivatives(inputs, tangents, jacobian=True):
    kw = {"grad": {"of": "f"}, "jvp": {"of": ["y", "f"], "tangents": tangents},
          "hvp": {"of": "f", "tangents": tangents}}
    if jacobian:
        kw["jacobian"] = {"of": ["y"], "wrt": params(inputs)}
    return kw


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_slice_of_a_batch_is_the_run_of_the_slice(name, data):
    nodes, inputs, _ = op_graph(name, data)
    mapped = data.draw(st.sets(st.sampled_from(params(inputs)), min_size=1))
    rng = np.random.default_rng(9)
    batch = {k: (np.stack([a + 0.01 * i for i in range(B)]) if k in mapped else a)
             for k, a in inputs.items()}
    tangents = {k: rng.standard_normal(batch[k].shape) for k in params(inputs)}
    r = run(nodes, batch, vmap=sorted(mapped), **derivatives(inputs, tangents))
    for i in range(B):
        one = {k: a[i] if k in mapped else a for k, a in batch.items()}
        t = {k: v[i] if k in mapped else v for k, v in tangents.items()}
        s = run(nodes, one, **derivatives(inputs, t))
        for member in ("outputs", "gradients", "jvp", "hvp"):
            got, want = getattr(r, member), getattr(s, member)
            assert set(got) == set(want)
            for k in want:
                assert got[k].shape == (B, *want[k].shape), (member, k)
                np.testing.assert_allclose(got[k][i], want[k], rtol=1e-9, atol=1e-12,
                                           err_msg=f"{member} {k}")
        for x, j in s.jacobians["y"].items():
            np.testing.assert_allclose(r.jacobians["y"][x][i], j, rtol=1e-9, atol=1e-12)


def test_forward_mode_jacobian_per_example():
    rng = np.random.default_rng(1)
    nodes = [{"id": "y", "op": "mul", "args": ["x", "w"]},
             {"id": "z", "op": "exp", "args": ["y"]}]
    x, w = rng.standard_normal((B, 4)), rng.standard_normal(())
    p = autograd.plan(nodes, {"x": Leaf((B, 4)), "w": Leaf(())}, vmap=["x"],
                      jacobian={"of": ["z"], "wrt": ["w"]})
    assert p.plan.jacobian.mode == "forward"
    r = autograd.evaluate(nodes, {"x": x, "w": w}, vmap=["x"], dtype="float64",
                          jacobian={"of": ["z"], "wrt": ["w", "x"]})
    np.testing.assert_allclose(r.jacobians["z"]["w"], x * np.exp(x * w), rtol=1e-12)
    for i in range(B):
        np.testing.assert_allclose(r.jacobians["z"]["x"][i], np.diag(w * np.exp(x[i] * w)),
                                   rtol=1e-12)


def test_a_shared_output_comes_back_per_example():
    r = autograd.evaluate([{"id": "y", "op": "sin", "args": ["w"]},
                           {"id": "z", "op": "mul", "args": ["x", "y"]}],
                          {"x": np.ones((B, 2)), "w": np.array([0.5, 1.0])}, vmap=["x"],
                          outputs=["y", "z"], dtype="float64")
    assert r.outputs["y"].shape == (B, 2)
    np.testing.assert_allclose(r.outputs["y"][2], np.sin([0.5, 1.0]))


def test_per_example_seed():
    nodes = [{"id": "y", "op": "mul", "args": ["x", 2.0]}]
    seed = np.arange(B * 2.0).reshape(B, 2)
    r = autograd.evaluate(nodes, {"x": np.ones((B, 2))}, vmap=["x"], requires_grad={"x"},
                          grad={"of": "y", "seed": seed}, dtype="float64")
    np.testing.assert_allclose(r.gradients["x"], 2 * seed)


NODES = [{"id": "y", "op": "sin", "args": ["x"]}]
REFUSED = [
    ({"x": Leaf((B, 2)), "z": Leaf((B + 1, 2))}, ["x", "z"], ShapeMismatch, ("vmap", "inputs")),
    ({"x": Leaf((B, 2))}, ["q"], UnknownId, ("vmap", "inputs", 0)),
    ({"x": Leaf(())}, ["x"], ShapeMismatch, ("inputs", "x")),
    ({"x": Leaf((B, 2))}, [], AutogradError, ("vmap", "inputs")),
]


@pytest.mark.parametrize("leaves, names, error, path", REFUSED)
def test_refused(leaves, names, error, path):
    with pytest.raises(error) as e:
        autograd.plan(NODES, leaves, vmap=names)
    assert e.value.path == path


def test_seed_and_batch_members_are_checked_per_example():
    leaves = {"x": Leaf((B, 2), True)}
    with pytest.raises(ShapeMismatch) as e:
        autograd.plan(NODES, leaves, vmap=["x"], grad={"of": "y"}, seed_shape=(2,))
    assert e.value.path == ("grad", "seed")
    with pytest.raises(AutogradError) as e:
        autograd.plan(NODES, leaves, vmap=["x"], grad={"of": "y", "batch": True},
                      seed_shape=(4, B, 2))
    assert e.value.path == ("grad", "batch")


def test_limits_count_the_whole_batch():
    limits = autograd.Limits(max_elements=1000)
    autograd.plan(NODES, {"x": Leaf((1, 900))}, vmap=["x"], limits=limits)
    with pytest.raises(LimitExceeded):
        autograd.plan([{"id": "y", "op": "mul", "args": ["x", "w"]}],
                      {"x": Leaf((2, 900)), "w": Leaf((900,))}, vmap=["x"], limits=limits)
