"""The graph runner: `autograd.plan` / `Plan.run` and `autograd.evaluate` (PROTOCOL.md §1)."""

from __future__ import annotations

import random
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import autograd
from autograd import (
    ArityError,
    BadAttribute,
    CycleError,
    DeadlineExceeded,
    DuplicateId,
    Leaf,
    LimitExceeded,
    Limits,
    SeedRequired,
    ShapeMismatch,
    UnknownId,
    UnknownOp,
)

# ---- PROTOCOL.md §1 example -------------------------------------------------------------

X = np.array([[1.0, 2.0], [3.0, 4.0]])
W = np.array([[0.5], [-0.25]])
B = np.array([1.0])  # "AACAPw==": float32 1.0, little-endian
EXAMPLE = [
    {"id": "h", "op": "matmul", "args": ["x", "w"]},
    {"id": "z", "op": "add", "args": ["h", "b"]},
    {"id": "a", "op": "sigmoid", "args": ["z"]},
    {"id": "loss", "op": "mean", "args": ["a"]},
]


def example_expected():
    """Values and gradients of the example, by hand in float64."""
    z = X @ W + B
    a = 1 / (1 + np.exp(-z))
    dz = a * (1 - a) / a.size            # d mean / d a = 1/n, times sigmoid'
    return {"loss": a.mean(), "a": a}, {"w": X.T @ dz, "b": dz.sum(axis=0)}


def run_example(nodes=EXAMPLE, **kw):
    kw.setdefault("outputs", ["loss", "a"])
    kw.setdefault("grad", {"of": "loss", "wrt": ["w", "b"]})
    return autograd.evaluate(nodes, {"x": X, "w": W, "b": B}, requires_grad=["w", "b"], **kw)


def test_protocol_example():
    r = run_example()
    values, grads = example_expected()
    assert set(r.outputs) == {"loss", "a"} and set(r.gradients) == {"w", "b"}
    for name, v in values.items():
        assert r.outputs[name].dtype == np.float32 and r.outputs[name].shape == v.shape
        np.testing.assert_allclose(r.outputs[name], v, rtol=1e-6)
    for name, g in grads.items():
        assert r.gradients[name].dtype == np.float32 and r.gradients[name].shape == g.shape
        np.testing.assert_allclose(r.gradients[name], g, rtol=1e-6)
    # the numbers printed in PROTOCOL.md
    np.testing.assert_allclose(r.outputs["loss"], 0.7743165, rtol=1e-6)
    np.testing.assert_allclose(r.outputs["a"], [[0.7310586], [0.8175744]], rtol=1e-6)
    np.testing.assert_allclose(r.gradients["w"], [[0.3220257], [0.4949049]], rtol=1e-6)
    np.testing.assert_allclose(r.gradients["b"], [0.1728792], rtol=1e-6)
    assert r.warnings == []
    assert r.stats["nodes"] == 4


def test_protocol_example_in_float64():
    r = run_example(dtype="float64")
    values, grads = example_expected()
    np.testing.assert_allclose(r.outputs["loss"], values["loss"], rtol=1e-14)
    np.testing.assert_allclose(r.gradients["w"], grads["w"], rtol=1e-14)
    assert r.gradients["w"].dtype == np.float64


def test_plan_then_run_matches_evaluate():
    p = autograd.plan(EXAMPLE, {"x": Leaf((2, 2)), "w": Leaf((2, 1), True), "b": Leaf((1,), True)},
                      outputs=["loss", "a"], grad={"of": "loss"})
    r = p.run({"x": X, "w": W, "b": B})
    e = run_example()
    for name in ("loss", "a"):
        np.testing.assert_array_equal(r.outputs[name], e.outputs[name])
    for name in ("w", "b"):
        np.testing.assert_array_equal(r.gradients[name], e.gradients[name])


@pytest.mark.parametrize("seed", range(5))
def test_node_order_does_not_matter(seed):
    nodes = EXAMPLE + [{"id": "e", "op": "exp", "args": ["h"]},
                       {"id": "s", "op": "sum", "args": ["e"], "attrs": {"axis": 0}},
                       {"id": "t", "op": "add", "args": ["s", "loss"]}]
    shuffled = random.Random(seed).sample(nodes, len(nodes))
    kw = dict(outputs=["t", "a"], grad={"of": "t", "wrt": ["w", "b", "h"]})
    a, b = run_example(nodes, **kw), run_example(shuffled, **kw)
    for name in a.outputs:
        np.testing.assert_array_equal(a.outputs[name], b.outputs[name])
    assert set(a.gradients) == set(b.gradients) == {"w", "b", "h"}
    for name in a.gradients:
        np.testing.assert_array_equal(a.gradients[name], b.gradients[name])


# ---- gradients ------------------------------------------------------------------------

DIAMOND = [
    {"id": "c", "op": "add", "args": ["a", "b"]},     # listed before what it reads
    {"id": "a", "op": "exp", "args": ["x"]},
    {"id": "b", "op": "mul", "args": ["a", "a"]},      # a used twice here, and again in c
    {"id": "y", "op": "sum", "args": ["c"]},
]
XD = np.array([0.1, -0.4, 0.7])


def test_diamond_accumulates_gradients():
    r = autograd.evaluate(DIAMOND, {"x": XD}, requires_grad=["x"], grad={"of": "y"},
                          dtype="float64")
    # y = Σ e^x + e^2x
    np.testing.assert_allclose(r.outputs["y"], np.sum(np.exp(XD) + np.exp(2 * XD)), rtol=1e-14)
    np.testing.assert_allclose(r.gradients["x"], np.exp(XD) + 2 * np.exp(2 * XD), rtol=1e-14)


def test_gradient_with_respect_to_intermediates():
    r = autograd.evaluate(DIAMOND, {"x": XD}, requires_grad=["x"], dtype="float64",
                          grad={"of": "y", "wrt": ["a", "b", "c", "y", "x"]})
    a = np.exp(XD)
    np.testing.assert_allclose(r.gradients["a"], 1 + 2 * a, rtol=1e-14)   # dy/da, b = a²
    np.testing.assert_array_equal(r.gradients["b"], np.ones(3))
    np.testing.assert_array_equal(r.gradients["c"], np.ones(3))
    assert r.gradients["y"].shape == () and float(r.gradients["y"]) == 1.0
    np.testing.assert_allclose(r.gradients["x"], a + 2 * a * a, rtol=1e-14)


def test_gradient_of_an_unrelated_input_is_zeros():
    nodes = [{"id": "y", "op": "sum", "args": ["e"]}, {"id": "e", "op": "exp", "args": ["x"]}]
    r = autograd.evaluate(nodes, {"x": XD, "u": np.ones((2, 3))}, requires_grad=["x", "u"],
                          grad={"of": "y", "wrt": ["u", "x"]})
    assert r.gradients["u"].shape == (2, 3) and r.gradients["u"].dtype == np.float32
    np.testing.assert_array_equal(r.gradients["u"], np.zeros((2, 3)))
    np.testing.assert_allclose(r.gradients["x"], np.exp(XD), rtol=1e-6)


def test_gradient_of_an_input_that_needs_no_gradient_is_zeros():
    """`of` does not depend on u: zeros even if u is not marked requires_grad."""
    nodes = [{"id": "y", "op": "sum", "args": ["x"]}, {"id": "v", "op": "exp", "args": ["u"]}]
    r = autograd.evaluate(nodes, {"x": XD, "u": np.ones(2)}, grad={"of": "y", "wrt": ["u"]})
    np.testing.assert_array_equal(r.gradients["u"], np.zeros(2))


@pytest.mark.parametrize("outputs", [None, ["y"]], ids=["default outputs", "outputs=[y]"])
def test_gradient_of_a_node_that_of_does_not_depend_on_is_zeros(outputs):
    """A sibling node (v) and a node downstream of `of` (w): zeros of their shapes.

    With outputs=["y"], neither v nor w has to be computed at all.
    """
    nodes = [{"id": "y", "op": "sum", "args": ["x"]},
             {"id": "v", "op": "sin", "args": ["x"]},
             {"id": "w", "op": "mul", "args": ["y", 2]}]
    r = autograd.evaluate(nodes, {"x": XD}, requires_grad=["x"], outputs=outputs,
                          grad={"of": "y", "wrt": ["v", "w", "x"]})
    assert r.gradients["v"].shape == (3,) and not r.gradients["v"].any()
    assert r.gradients["w"].shape == () and not r.gradients["w"].any()
    np.testing.assert_array_equal(r.gradients["x"], np.ones(3))


def test_wrt_defaults_to_inputs_that_require_grad():
    r = run_example(grad={"of": "loss"})
    assert set(r.gradients) == {"w", "b"}
    r = autograd.evaluate(EXAMPLE, {"x": X, "w": W, "b": B}, requires_grad=["x"],
                          grad={"of": "loss"})
    assert set(r.gradients) == {"x"}
    assert r.gradients["x"].shape == X.shape and r.gradients["x"].any()


@pytest.mark.parametrize("grad", [{"of": "loss"}, {"of": "loss", "wrt": []}])
def test_grad_with_nothing_to_differentiate_warns(grad):
    """No input requires grad and `wrt` names none: the mistake is said, not passed over."""
    r = autograd.evaluate(EXAMPLE, {"x": X, "w": W, "b": B}, grad=grad)
    assert r.gradients == {}
    (w,) = r.warnings
    assert (w["id"], w["kind"]) == ("loss", "nothing_to_differentiate")
    assert "requires_grad" in w["detail"] and "wrt" in w["detail"]
    assert run_example(grad={"of": "loss"}).warnings == []  # w and b require grad


def test_no_grad_means_no_backward_pass():
    r = run_example(grad=None)
    assert r.gradients == {}


def test_outputs_default_to_nodes_no_other_node_uses():
    r = run_example(outputs=None)
    assert set(r.outputs) == {"loss"}
    nodes = EXAMPLE + [{"id": "e", "op": "exp", "args": ["z"]}]
    assert set(run_example(nodes, outputs=None).outputs) == {"loss", "e"}


def test_only_what_outputs_and_of_need_is_run():
    """v is neither returned nor on the way to `of`: it is not run, so it cannot warn,
    however many other unneeded nodes hang off the graph."""
    base = [{"id": "y", "op": "sum", "args": ["x"]}, {"id": "v", "op": "log", "args": ["x"]}]
    for nodes in (base, base + [{"id": "v2", "op": "exp", "args": ["v"]}]):
        r = autograd.evaluate(nodes, {"x": np.array([-1.0, 2.0])}, outputs=["y"], anomaly=True)
        assert r.warnings == [], nodes
        assert r.stats["nodes"] == 1, nodes


def test_outputs_may_name_inputs():
    r = run_example(outputs=["x", "h"])
    np.testing.assert_array_equal(r.outputs["x"], X)
    np.testing.assert_allclose(r.outputs["h"], X @ W)


def test_seed_for_a_non_scalar_of():
    seed = np.array([[1.0], [-2.0]])
    r = run_example(grad={"of": "a", "wrt": ["w", "b"], "seed": seed}, dtype="float64")
    a = 1 / (1 + np.exp(-(X @ W + B)))
    dz = seed * a * (1 - a)
    np.testing.assert_allclose(r.gradients["w"], X.T @ dz, rtol=1e-14)
    np.testing.assert_allclose(r.gradients["b"], dz.sum(axis=0), rtol=1e-14)


def test_seed_scales_a_scalar_of():
    r1 = run_example(dtype="float64")
    r3 = run_example(grad={"of": "loss", "wrt": ["w"], "seed": 3.0}, dtype="float64")
    np.testing.assert_allclose(r3.gradients["w"], 3 * r1.gradients["w"], rtol=1e-14)


def test_missing_seed_for_a_non_scalar_of():
    with pytest.raises(SeedRequired) as e:
        run_example(grad={"of": "a", "wrt": ["w"]})
    assert e.value.code == "seed_required"
    assert e.value.path[:1] == ("grad",)


@pytest.mark.parametrize("seed", [np.ones(2), np.ones((1, 2)), np.ones((2, 1, 1)), 1.0],
                         ids=["(2,)", "(1,2)", "(2,1,1)", "scalar"])
def test_wrong_seed_shape(seed):
    with pytest.raises(ShapeMismatch) as e:
        run_example(grad={"of": "a", "wrt": ["w"], "seed": seed})
    assert e.value.code == "shape_mismatch"
    assert e.value.path == ("grad", "seed")


def test_wrong_seed_shape_at_run():
    p = autograd.plan(EXAMPLE, {"x": Leaf((2, 2)), "w": Leaf((2, 1), True), "b": Leaf((1,))},
                      grad={"of": "a"}, seed_shape=(2, 1))
    with pytest.raises(ShapeMismatch) as e:
        p.run({"x": X, "w": W, "b": B}, np.ones(2))
    assert e.value.path == ("grad", "seed")


# ---- errors: code and path --------------------------------------------------------------

INPUTS = {"x": np.ones((2, 3)), "y": np.ones((4,)), "m": np.ones((2, 1))}


def exp(nid, arg="x"):
    return {"id": nid, "op": "exp", "args": [arg]}


ERRORS = [
    # (name, nodes, error class, code, path)
    ("unknown op", [exp("a"), {"id": "b", "op": "frobnicate", "args": ["a"]}],
     UnknownOp, "unknown_op", ("nodes", 1, "op")),
    ("op not a string", [{"id": "a", "op": 3, "args": ["x"]}],
     UnknownOp, "unknown_op", ("nodes", 0, "op")),
    ("unknown id", [exp("a"), {"id": "b", "op": "add", "args": ["a", "nope"]}],
     UnknownId, "unknown_id", ("nodes", 1, "args", 1)),
    ("unknown id, first arg", [{"id": "b", "op": "exp", "args": ["nope"]}],
     UnknownId, "unknown_id", ("nodes", 0, "args", 0)),
    ("duplicate id", [exp("a"), exp("b"), exp("a")],
     DuplicateId, "duplicate_id", ("nodes", 2, "id")),
    ("id repeats an input", [exp("a"), exp("x", "a")],
     DuplicateId, "duplicate_id", ("nodes", 1, "id")),
    ("too few args", [{"id": "a", "op": "add", "args": ["x"]}],
     ArityError, "wrong_arity", ("nodes", 0, "args")),
    ("too many args", [exp("a"), {"id": "b", "op": "exp", "args": ["x", "a"]}],
     ArityError, "wrong_arity", ("nodes", 1, "args")),
    ("no args", [{"id": "a", "op": "neg"}],
     ArityError, "wrong_arity", ("nodes", 0, "args")),
    ("unknown attribute", [{"id": "a", "op": "sum", "args": ["x"], "attrs": {"axes": 0}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axes")),
    ("attribute on an op without any", [{"id": "a", "op": "exp", "args": ["x"],
                                         "attrs": {"axis": 0}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("bool for an int", [{"id": "a", "op": "softmax", "args": ["x"], "attrs": {"axis": True}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("bool for an axis", [{"id": "a", "op": "sum", "args": ["x"], "attrs": {"axis": False}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("float for an axis", [{"id": "a", "op": "mean", "args": ["x"], "attrs": {"axis": 1.0}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("int for a bool", [{"id": "a", "op": "sum", "args": ["x"], "attrs": {"keepdims": 1}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "keepdims")),
    ("string for a number", [exp("a"), {"id": "b", "op": "pow", "args": ["a"],
                                        "attrs": {"exponent": "2"}}],
     BadAttribute, "bad_attribute", ("nodes", 1, "attrs", "exponent")),
    ("bool for a number", [{"id": "a", "op": "pow", "args": ["x"], "attrs": {"exponent": True}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "exponent")),
    ("nan for a number", [{"id": "a", "op": "pow", "args": ["x"],
                           "attrs": {"exponent": float("nan")}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "exponent")),
    ("axis out of range", [{"id": "a", "op": "sum", "args": ["x"], "attrs": {"axis": 2}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("negative axis out of range", [{"id": "a", "op": "mean", "args": ["x"],
                                     "attrs": {"axis": [0, -3]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("softmax axis out of range", [{"id": "a", "op": "softmax", "args": ["x"],
                                    "attrs": {"axis": -3}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("repeated axis", [{"id": "a", "op": "sum", "args": ["x"], "attrs": {"axis": [1, -1]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axis")),
    ("two -1 in reshape", [{"id": "a", "op": "reshape", "args": ["x"],
                            "attrs": {"shape": [-1, -1]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "shape")),
    ("reshape shape not a list", [{"id": "a", "op": "reshape", "args": ["x"],
                                   "attrs": {"shape": 6}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "shape")),
    ("repeated axis in a permutation", [{"id": "a", "op": "transpose", "args": ["x"],
                                         "attrs": {"axes": [0, 0]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axes")),
    ("permutation too short", [{"id": "a", "op": "transpose", "args": ["x"],
                                "attrs": {"axes": [0]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axes")),
    ("permutation out of range", [{"id": "a", "op": "transpose", "args": ["x"],
                                   "attrs": {"axes": [0, 2]}}],
     BadAttribute, "bad_attribute", ("nodes", 0, "attrs", "axes")),
    ("broadcast", [exp("a"), {"id": "b", "op": "add", "args": ["a", "y"]}],
     ShapeMismatch, "shape_mismatch", ("nodes", 1, "args")),
    ("broadcast, node listed first", [{"id": "b", "op": "mul", "args": ["y", "a"]}, exp("a")],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
    ("matmul inner dims", [{"id": "a", "op": "matmul", "args": ["x", "m"]}],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
    ("matmul of a vector", [{"id": "a", "op": "matmul", "args": ["y", "y"]}],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
    ("mse pred/target", [{"id": "a", "op": "mse_loss", "args": ["x", "m"]}],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
    ("mae pred/target", [{"id": "a", "op": "mae_loss", "args": ["m", "x"]}],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
    ("reshape size", [{"id": "a", "op": "reshape", "args": ["x"], "attrs": {"shape": [4, -1]}}],
     ShapeMismatch, "shape_mismatch", ("nodes", 0, "args")),
]


ERRORS += [
    ("bool as a number literal", [{"id": "a", "op": "mul", "args": ["x", True]}],
     autograd.AutogradError, "validation_error", ("nodes", 0, "args", 1)),
    ("number where the op takes none", [{"id": "a", "op": "exp", "args": [2.0]}],
     autograd.AutogradError, "validation_error", ("nodes", 0, "args", 0)),
    ("only number literals", [{"id": "a", "op": "add", "args": [1.0, 2.0]}],
     autograd.AutogradError, "validation_error", ("nodes", 0, "args")),
    ("arg neither id nor number", [{"id": "a", "op": "add", "args": ["x", None]}],
     autograd.AutogradError, "validation_error", ("nodes", 0, "args", 1)),
    ("id not matching the pattern", [exp("a"), exp("1a")],
     autograd.AutogradError, "validation_error", ("nodes", 1, "id")),
    # a number literal is no id a client can name
    ("a literal's internal name", [{"id": "a", "op": "add", "args": ["x", 2.0]},
                                   {"id": "b", "op": "mul", "args": ["x", "#0.1"]}],
     UnknownId, "unknown_id", ("nodes", 1, "args", 1)),
]


@pytest.mark.parametrize("nodes, cls, code, path", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors_carry_code_and_path(nodes, cls, code, path):
    with pytest.raises(cls) as e:
        autograd.evaluate(nodes, INPUTS)
    assert e.value.code == code
    assert e.value.path == path
    assert isinstance(e.value, autograd.AutogradError)
    with pytest.raises(cls):  # the same without any array: the planner decides
        autograd.plan(nodes, {k: Leaf(v.shape) for k, v in INPUTS.items()})


@pytest.mark.parametrize(("op", "meant"), [
    ("sigmod", "sigmoid"), ("Sigmoid", "sigmoid"), ("SIGMOID", "sigmoid"), ("matmull", "matmul"),
    ("softmx", "softmax"), ("MSE_loss", "mse_loss"), ("frobnicate", None), ("", None),
])
def test_an_unknown_op_suggests_the_registered_name_it_resembles(op, meant):
    with pytest.raises(UnknownOp) as e:
        autograd.evaluate([{"id": "a", "op": op, "args": ["x"]}], INPUTS)
    hint = "did you mean"
    assert (f"{hint} {meant!r}?" in e.value.detail) if meant else hint not in e.value.detail
    assert "GET" not in e.value.detail  # the engine speaks no HTTP


@pytest.mark.parametrize("nodes, ids", [
    ([{"id": "a", "op": "exp", "args": ["a"]}], ["a"]),
    ([exp("a", "b"), exp("b", "a")], ["a", "b"]),
    ([exp("c"), {"id": "a", "op": "add", "args": ["c", "b"]}, exp("b", "d"), exp("d", "a"),
      exp("e", "a")], ["a", "b", "d"]),
], ids=["self-loop", "two nodes", "three nodes with others around"])
def test_cycle_names_its_ids(nodes, ids):
    with pytest.raises(CycleError) as e:
        autograd.evaluate(nodes, INPUTS)
    assert e.value.code == "cycle"
    assert sorted(e.value.ids) == ids
    assert e.value.path[0] == "nodes" and nodes[e.value.path[1]]["id"] in ids
    for i in ids:
        assert i in str(e.value)


@pytest.mark.parametrize("kw, path", [
    ({"outputs": ["nope"]}, ("outputs", 0)),
    ({"grad": {"of": "nope"}}, ("grad", "of")),
    ({"grad": {"of": "a", "wrt": ["x", "nope"], "seed": np.ones((2, 3))}}, ("grad", "wrt", 1)),
    # "#1.1" is how the engine may name node 1's literal 2; a client cannot name it
    ({"outputs": ["a", "#1.1"]}, ("outputs", 1)),
    ({"grad": {"of": "#1.1"}}, ("grad", "of")),
], ids=["outputs", "of", "wrt", "outputs: a literal", "of: a literal"])
def test_unknown_ids_in_outputs_and_grad(kw, path):
    with pytest.raises(UnknownId) as e:
        autograd.evaluate([exp("a"), {"id": "b", "op": "mul", "args": ["x", 2]}], INPUTS, **kw)
    assert e.value.path == path


def test_bad_input_name():
    with pytest.raises(autograd.AutogradError) as e:
        autograd.evaluate([exp("a")], {"x": np.ones(2), "no good": np.ones(2)})
    assert e.value.path == ("inputs", "no good")


def test_number_literals_in_args():
    nodes = [{"id": "a", "op": "sub", "args": [2.0, "x"]},
             {"id": "b", "op": "mul", "args": ["a", 3]},
             {"id": "y", "op": "sum", "args": ["b"]}]
    r = autograd.evaluate(nodes, {"x": XD}, requires_grad=["x"], grad={"of": "y"},
                          dtype="float64", outputs=["b"])
    np.testing.assert_allclose(r.outputs["b"], (2.0 - XD) * 3, rtol=1e-15)
    np.testing.assert_array_equal(r.gradients["x"], [-3.0, -3.0, -3.0])


# ---- limits, decided from shapes before allocation --------------------------------------

BIG = {"u": np.ones((100_000, 1), np.float32), "v": np.ones((1, 100_000), np.float32)}
OUTER = [{"id": "o", "op": "mul", "args": ["u", "v"]}, {"id": "s", "op": "sum", "args": ["o"]}]


def test_tensor_too_large_is_refused_before_allocation():
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(LimitExceeded) as e:
            autograd.evaluate(OUTER, BIG, limits=Limits(max_elements=10**7))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 10 * 2**20       # a 1e5 x 1e5 float32 product would be 40 GB
    assert e.value.code == "tensor_too_large"
    assert e.value.path == ("nodes", 0)


def test_plan_costs_a_huge_graph_without_allocating():
    tracemalloc.start()
    try:
        p = autograd.plan(OUTER, {"u": Leaf((100_000, 1)), "v": Leaf((1, 100_000))},
                          grad={"of": "s", "wrt": ["u"]})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert p.cost.max_elements == 10**10
    assert p.cost.peak_bytes >= 4 * 10**10
    assert p.cost.flops >= 10**10


@pytest.mark.parametrize("limits, code, path", [
    (Limits(max_nodes=1), "graph_too_large", ("nodes",)),
    (Limits(max_elements=99_999), "tensor_too_large", ("inputs", "u")),
    (Limits(max_total_bytes=10**8), "graph_too_large", None),
    (Limits(max_flops=10**9), "graph_too_large", None),
], ids=["nodes", "input elements", "total bytes", "flops"])
def test_limits(limits, code, path):
    with pytest.raises(LimitExceeded) as e:
        autograd.evaluate(OUTER, BIG, limits=limits)
    assert e.value.code == code
    if path is not None:
        assert e.value.path == path


def test_limits_that_are_not_reached():
    small = {"u": np.ones((10, 1)), "v": np.ones((1, 10))}
    r = autograd.evaluate(OUTER, small, limits=Limits(max_nodes=2, max_elements=100,
                                                      max_total_bytes=10**4, max_flops=10**4))
    assert float(r.outputs["s"]) == 100.0


def test_flops_count_matmul():
    nodes = [{"id": "y", "op": "matmul", "args": ["a", "b"]}]
    leaves = {"a": Leaf((100, 200)), "b": Leaf((200, 300))}
    assert autograd.plan(nodes, leaves).cost.flops >= 2 * 100 * 200 * 300
    with pytest.raises(LimitExceeded):
        autograd.plan(nodes, leaves, limits=Limits(max_flops=2 * 100 * 200 * 300 - 1))


def test_deadline_in_the_past():
    with pytest.raises(DeadlineExceeded) as e:
        run_example(deadline=time.monotonic() - 1)
    assert e.value.code == "deadline_exceeded"


def test_deadline_in_the_future():
    r = run_example(deadline=time.monotonic() + 60)
    np.testing.assert_allclose(r.outputs["loss"], 0.7743165, rtol=1e-6)


def test_deadline_stops_a_long_run():
    n = 20_000
    nodes = [{"id": f"n{i}", "op": "sin", "args": [f"n{i - 1}" if i else "x"]} for i in range(n)]
    p = autograd.plan(nodes, {"x": Leaf((100,))})
    t0 = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        p.run({"x": np.ones(100)}, deadline=time.monotonic() + 0.01)
    assert time.perf_counter() - t0 < 1


# ---- anomaly and non-finite warnings ----------------------------------------------------

ANOMALY = [{"id": "b", "op": "exp", "args": ["a"]}, {"id": "a", "op": "log", "args": ["x"]},
           {"id": "c", "op": "mul", "args": ["b", 2]}]


def test_anomaly_names_the_first_non_finite_node():
    r = autograd.evaluate(ANOMALY, {"x": np.array([-1.0, 2.0, -3.0])}, anomaly=True)
    found = [w for w in r.warnings if "phase" in w]
    assert found == [{"id": "a", "op": "log", "phase": "forward", "kind": "nan"}]
    assert {"id": "c", "in": "outputs", "kind": "nan", "count": 2} in r.warnings


def test_anomaly_infinity():
    r = autograd.evaluate(ANOMALY, {"x": np.array([0.0, 2.0])}, outputs=["a"], anomaly=True)
    assert {"id": "a", "op": "log", "phase": "forward", "kind": "inf"} in r.warnings
    assert {"id": "a", "in": "outputs", "kind": "inf", "count": 1} in r.warnings


def test_anomaly_in_the_backward_pass():
    nodes = [{"id": "s", "op": "sqrt", "args": ["x"]}, {"id": "y", "op": "sum", "args": ["s"]}]
    r = autograd.evaluate(nodes, {"x": np.array([0.0, 4.0])}, requires_grad=["x"],
                          grad={"of": "y"}, anomaly=True)
    assert [w for w in r.warnings if "phase" in w] == [
        {"id": "s", "op": "sqrt", "phase": "backward", "kind": "inf"}]
    assert {"id": "x", "in": "gradients", "kind": "inf", "count": 1} in r.warnings


def test_without_anomaly_only_returned_tensors_are_reported():
    r = autograd.evaluate(ANOMALY, {"x": np.array([-1.0, 2.0, -3.0])})
    assert r.warnings == [{"id": "c", "in": "outputs", "kind": "nan", "count": 2}]
    assert np.isnan(r.outputs["c"]).sum() == 2


def test_warnings_count_nan_and_inf_separately():
    nodes = [{"id": "y", "op": "log", "args": ["x"]}]
    r = autograd.evaluate(nodes, {"x": np.array([-1.0, 0.0, 0.0, 1.0])})
    assert sorted(r.warnings, key=lambda w: w["kind"]) == [
        {"id": "y", "in": "outputs", "kind": "inf", "count": 2},
        {"id": "y", "in": "outputs", "kind": "nan", "count": 1}]


def test_finite_results_have_no_warnings():
    r = autograd.evaluate(ANOMALY, {"x": np.array([1.0, 2.0])}, anomaly=True)
    assert r.warnings == []


# ---- memory: intermediates are released -------------------------------------------------

def chain(op: str, n: int) -> list[dict]:
    return [{"id": f"n{i}", "op": op, "args": [f"n{i - 1}" if i else "x"]} for i in range(n)]


def names(values) -> list[str]:
    """Ids of what a plan releases (it may list them as ids or as its planned tensors)."""
    return sorted(getattr(v, "name", v) for v in values)


def test_forward_frees_values_nobody_reads_again():
    p = autograd.plan(chain("neg", 50), {"x": Leaf((10,))})
    freed = names(v for s in p.steps for v in s.frees)
    assert freed == sorted(f"n{i}" for i in range(49))   # all but the output
    assert "n49" not in freed and "x" not in freed


def test_backward_frees_values_its_rules_read():
    p = autograd.plan(chain("exp", 50), {"x": Leaf((10,), True)}, grad={"of": "n49"},
                      seed_shape=(10,))
    assert all(not s.frees for s in p.steps)     # exp's rule reads its output: kept
    freed = names(v for step in p.backward_frees for v in step)
    assert freed == sorted(f"n{i}" for i in range(49))


@pytest.mark.parametrize("op, grows", [("neg", False), ("exp", True)])
def test_peak_bytes_grow_with_what_is_kept(op, grows):
    def peak(n):
        return autograd.plan(chain(op, n), {"x": Leaf((1000,), True)}, grad={"of": f"n{n - 1}"},
                             seed_shape=(1000,)).cost.peak_bytes
    assert (peak(100) > 5 * peak(10)) == grows
    if not grows:
        assert peak(100) == peak(10) <= 8 * 4000


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "forward and backward"])
def test_run_releases_intermediates(grad):
    n, size = 30, 500_000                     # 2 MB per float32 value, 60 MB if all kept
    kw = {"grad": {"of": f"n{n - 1}"}, "seed_shape": (size,)} if grad else {}
    p = autograd.plan(chain("neg", n), {"x": Leaf((size,), True)}, **kw)
    x, seed = np.full(size, 0.5, np.float32), np.ones(size, np.float32)
    tracemalloc.start()
    try:
        r = p.run({"x": x}, seed if grad else None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= p.cost.peak_bytes + 2**20
    assert peak < 6 * 4 * size
    np.testing.assert_array_equal(r.outputs[f"n{n - 1}"], x)   # 30 negations
    if grad:
        np.testing.assert_array_equal(r.gradients["x"], seed)


# ---- concurrency ------------------------------------------------------------------------

def test_one_plan_run_from_many_threads():
    nodes = EXAMPLE + [{"id": "e", "op": "exp", "args": ["z"]},
                       {"id": "t", "op": "add", "args": ["loss", "q"]},
                       {"id": "q", "op": "sum", "args": ["e"]}]
    rng = np.random.default_rng(0)
    shapes_ = {"x": (64, 32), "w": (32, 16), "b": (16,)}
    p = autograd.plan(nodes, {k: Leaf(s, k != "x") for k, s in shapes_.items()},
                      outputs=["t", "a"], grad={"of": "t"}, dtype="float64")
    jobs = [{k: rng.standard_normal(s) * 0.1 for k, s in shapes_.items()} for _ in range(16)]
    expected = [p.run(j) for j in jobs]

    def work(k):
        return [p.run(jobs[(k + i) % len(jobs)]) for i in range(len(jobs))]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for k, rs in enumerate(results):
        for i, r in enumerate(rs):
            e = expected[(k + i) % len(jobs)]
            for name in ("t", "a"):
                np.testing.assert_array_equal(r.outputs[name], e.outputs[name])
            for name in ("w", "b"):
                np.testing.assert_array_equal(r.gradients[name], e.gradients[name])
    for j in jobs:  # inputs are never written to
        assert all(np.isfinite(v).all() for v in j.values())


def test_evaluate_from_many_threads():
    seeds = [np.array([[1.0], [float(k)]]) for k in range(8)]

    def work(k):
        return run_example(grad={"of": "a", "wrt": ["w", "b"], "seed": seeds[k]},
                           dtype="float64")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, [k % 8 for k in range(64)]))
    for i, r in enumerate(results):
        e = work(i % 8)
        np.testing.assert_array_equal(r.gradients["w"], e.gradients["w"])
        np.testing.assert_array_equal(r.outputs["a"], e.outputs["a"])


def test_a_failed_run_leaves_nothing_behind():
    p = autograd.plan(DIAMOND, {"x": Leaf((3,), True)}, grad={"of": "y"}, dtype="float64")
    good = p.run({"x": XD})
    with pytest.raises(DeadlineExceeded):
        p.run({"x": XD + 1}, deadline=time.monotonic() - 1)
    with pytest.raises(ValueError):
        p.run({"x": np.ones(4)})      # not the planned shape
    again = p.run({"x": XD})
    np.testing.assert_array_equal(again.outputs["y"], good.outputs["y"])
    np.testing.assert_array_equal(again.gradients["x"], good.gradients["x"])


def test_run_does_not_write_to_its_inputs_or_seed():
    p = autograd.plan(DIAMOND, {"x": Leaf((3,), True)}, grad={"of": "c", "wrt": ["x", "a"]},
                      seed_shape=(3,), dtype="float64")
    x, seed = XD.copy(), np.array([1.0, 2.0, 3.0])
    r1 = p.run({"x": x}, seed)
    np.testing.assert_array_equal(x, XD)
    np.testing.assert_array_equal(seed, [1.0, 2.0, 3.0])
    r2 = p.run({"x": x}, seed)
    np.testing.assert_array_equal(r1.gradients["x"], r2.gradients["x"])


def test_gradients_never_alias_the_callers_arrays():
    """d(sum(x * w))/dw is x: the result must be a copy, not the caller's own x."""
    x, w = np.arange(4.0), np.ones(4)
    r = autograd.evaluate([{"id": "p", "op": "mul", "args": ["x", "w"]},
                           {"id": "s", "op": "sum", "args": ["p"]}],
                          {"x": x, "w": w}, requires_grad={"x", "w"}, grad={"of": "s"},
                          dtype="float64")
    np.testing.assert_array_equal(r.gradients["w"], x)
    assert not np.shares_memory(r.gradients["w"], x)
    assert not np.shares_memory(r.gradients["x"], w)
    r.gradients["w"][:] = -1
    np.testing.assert_array_equal(x, np.arange(4.0))
