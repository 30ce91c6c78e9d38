"""The graph builder: the JSON it writes, its operators, and methods generated from the registry."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import client.errors as E
from autograd import OPS
from autograd.graph import ID
from client import Graph, Node, ops
from client.codec import BINARY_OVER, decode


@pytest.fixture
def g():
    return Graph()


@pytest.fixture
def xy(g):
    return g.input("x", np.arange(6.0).reshape(2, 3)), g.parameter("y", np.ones((2, 3)))


def test_the_readme_example_writes_the_protocol_example(g, example):
    x = g.input("x", np.array([[1.0, 2.0], [3.0, 4.0]]))
    w = g.parameter("w", np.array([[0.5], [-0.25]]))
    b = g.parameter("b", np.array([1.0]))
    h = (x @ w).named("h")
    z = (h + b).named("z")
    a = z.sigmoid().named("a")
    loss = a.mean().named("loss")
    body = g.to_json(loss, a, grad_of=loss, wrt=[w, b])
    assert {k: v for k, v in body.items() if k != "inputs"} == {
        k: v for k, v in example.items() if k != "inputs"}  # PROTOCOL.md §1
    assert body["inputs"] == {
        "x": {"shape": [2, 2], "dtype": "float32", "data": [[1, 2], [3, 4]],
              "requires_grad": False},
        "w": {"shape": [2, 1], "dtype": "float32", "data": [[0.5], [-0.25]],
              "requires_grad": True},
        "b": {"shape": [1], "dtype": "float32", "data": [1.0], "requires_grad": True},
    }
    assert decode(example["inputs"]["b"]) == decode(body["inputs"]["b"])
    json.dumps(body, allow_nan=False)


# Each expression, the op it writes, its args (ids or numbers), its attrs and its shape.
OPERATORS = [
    (lambda x, y: x + y, "add", ["x", "y"], None, (2, 3)),
    (lambda x, y: x + 2, "add", ["x", 2], None, (2, 3)),
    (lambda x, y: 2.5 + x, "add", [2.5, "x"], None, (2, 3)),
    (lambda x, y: x - y, "sub", ["x", "y"], None, (2, 3)),
    (lambda x, y: 1 - x, "sub", [1, "x"], None, (2, 3)),
    (lambda x, y: x * np.float32(0.5), "mul", ["x", 0.5], None, (2, 3)),
    (lambda x, y: 3 * y, "mul", [3, "y"], None, (2, 3)),
    (lambda x, y: x @ y.T(), "matmul", ["x", "transpose_0"], None, (2, 2)),
    (lambda x, y: x ** 2, "pow", ["x"], {"exponent": 2}, (2, 3)),
    (lambda x, y: x ** -0.5, "pow", ["x"], {"exponent": -0.5}, (2, 3)),
    (lambda x, y: -x, "neg", ["x"], None, (2, 3)),
    (lambda x, y: x.T(), "transpose", ["x"], None, (3, 2)),
    (lambda x, y: x.transpose((1, 0)), "transpose", ["x"], {"axes": [1, 0]}, (3, 2)),
    (lambda x, y: x.reshape((3, -1)), "reshape", ["x"], {"shape": [3, -1]}, (3, 2)),
    (lambda x, y: x.sum(), "sum", ["x"], None, ()),
    (lambda x, y: x.sum(0, True), "sum", ["x"], {"axis": 0, "keepdims": True}, (1, 3)),
    (lambda x, y: x.mean(axis=[-1]), "mean", ["x"], {"axis": [-1]}, (2,)),
    (lambda x, y: x.exp(), "exp", ["x"], None, (2, 3)),
    (lambda x, y: x.softmax(axis=0), "softmax", ["x"], {"axis": 0}, (2, 3)),
    (lambda x, y: x.mse_loss(y), "mse_loss", ["x", "y"], None, ()),
    (lambda x, y: x.mae_loss(y), "mae_loss", ["x", "y"], None, ()),
    (lambda x, y: ops.tanh(x), "tanh", ["x"], None, (2, 3)),
    (lambda x, y: ops.mse_loss(x, y), "mse_loss", ["x", "y"], None, ()),
    (lambda x, y: ops.sum(x, axis=1, keepdims=False), "sum", ["x"],
     {"axis": 1, "keepdims": False}, (2,)),
    # v1.1 (PROTOCOL.md §2.1): Python's operators and index syntax, functions for the rest
    (lambda x, y: x / y, "div", ["x", "y"], None, (2, 3)),
    (lambda x, y: 2 / x, "div", [2, "x"], None, (2, 3)),
    (lambda x, y: x > 0.5, "greater", ["x", 0.5], None, (2, 3)),
    (lambda x, y: 1 < x, "greater", ["x", 1], None, (2, 3)),  # noqa: SIM300 (reflected)
    (lambda x, y: x < y, "less", ["x", "y"], None, (2, 3)),
    (lambda x, y: x[1], "getitem", ["x"], {"index": [1]}, (3,)),
    (lambda x, y: x[::-1, None, ...], "getitem", ["x"], {"index": [
        {"start": None, "stop": None, "step": -1}, None, "..."]}, (2, 1, 3)),
    (lambda x, y: x[..., -1], "getitem", ["x"], {"index": ["...", -1]}, (2,)),
    (lambda x, y: ops.concat([x, y], axis=1), "concat", ["x", "y"], {"axis": 1}, (2, 6)),
    (lambda x, y: x.concat(y), "concat", ["x", "y"], None, (4, 3)),
    (lambda x, y: ops.stack([x, y, x], -1), "stack", ["x", "y", "x"], {"axis": -1}, (2, 3, 3)),
    (lambda x, y: ops.where(x, y, 0), "where", ["x", "y", 0], None, (2, 3)),
    (lambda x, y: ops.einsum("ij,kj->ik", x, y), "einsum", ["x", "y"],
     {"equation": "ij,kj->ik"}, (2, 2)),
    (lambda x, y: ops.take(x, [0, 0, 2], axis=1), "take", ["x"],
     {"indices": [0, 0, 2], "axis": 1}, (2, 3)),
    (lambda x, y: ops.clip(x, min=0), "clip", ["x"], {"min": 0}, (2, 3)),
    (lambda x, y: ops.cross_entropy(x, y), "cross_entropy", ["x", "y"], None, ()),
    (lambda x, y: x.max(axis=0), "max", ["x"], {"axis": 0}, (3,)),
]


@pytest.mark.parametrize(("expr", "op", "args", "attrs", "shape"), OPERATORS)
def test_an_expression_writes_its_node(g, xy, expr, op, args, attrs, shape):
    node = expr(*xy)
    assert isinstance(node, Node) and node.shape == shape
    written = g.to_json(node)["nodes"][-1]
    assert written == {"id": node.id, "op": op, "args": args, **({"attrs": attrs} if attrs else {})}
    assert type(written["args"][0]) is type(args[0])  # 2 stays an int, 2.5 a float


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_registry_op_is_a_method_and_a_function(name):
    assert getattr(Node, name) is getattr(ops, name)
    assert getattr(ops, name).__doc__.startswith(OPS[name].doc)
    assert name in ops.__all__


def test_a_new_registry_op_appears_in_the_builder_without_a_client_edit():
    program = """
import numpy as np
from autograd.registry import defop
defop("cube", 1, lambda x: x ** 3, lambda t, g: (3 * g * t.parents[0].data ** 2,),
      lambda s: s, "x³", "3 g x²", saves="x")
from client import Graph, ops
g = Graph()
x = g.input("x", [1.0, 2.0])
print(x.cube().shape, ops.cube(x).id, g.to_json(x.cube())["nodes"][-1]["op"])
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["(2,)", "cube_1", "cube"]


def test_generated_ids_are_valid_and_unique(g, xy):
    x, y = xy
    nodes = [x + y, x + y, (x * y).sum(), -x]
    ids = [n.id for n in nodes]
    assert len(set(ids)) == len(ids) and all(ID.fullmatch(i) for i in ids)
    g.input("add_5", 1.0)  # a name that a generated id would have taken next
    assert (x + y).id not in {"add_5", *ids}


def test_ids_can_be_chosen_but_not_reused_or_malformed(g, xy):
    x, y = xy
    s = (x + y).named("s")
    assert g["s"] is s
    with pytest.raises(ValueError, match="already used"):
        (x * y).named("s")
    with pytest.raises(ValueError, match="already used"):
        g.input("x", 1.0)
    with pytest.raises(ValueError, match="must match"):
        (x * y).named("1bad")
    with pytest.raises(ValueError, match="must match"):
        g.parameter("has space", 1.0)


def test_nodes_of_two_graphs_do_not_mix(xy):
    x, _ = xy
    other = Graph().input("z", np.ones((2, 3)))
    with pytest.raises(ValueError, match="different Graphs"):
        x + other
    with pytest.raises(ValueError, match="another Graph"):
        x.graph.to_json(x.sum(), grad_of=other.sum())


@pytest.mark.parametrize("expr", [
    lambda x: x @ 2,                    # matmul takes no numbers
    lambda x: 2 ** x,                   # the exponent is an attribute
    lambda x: x ** x,
    lambda x: x + float("nan"),         # JSON has no NaN literal
    lambda x: x + "1",
    lambda x: np.ones((2, 3)) + x,      # arrays are inputs: name them
    lambda x: ops.exp(1.0),
    lambda x: x[[0, 1]],                # advanced indexing: take() instead
    lambda x: ops.concat([x, 1.0]),
])
def test_what_the_builder_refuses_with_a_type_error(xy, expr):
    with pytest.raises(TypeError):
        expr(xy[0])


@pytest.mark.parametrize(("expr", "code"), [
    (lambda x, y: x @ y, "shape_mismatch"),
    (lambda x, y: x + y.T(), "shape_mismatch"),
    (lambda x, y: x.mse_loss(y.sum(0)), "shape_mismatch"),
    (lambda x, y: x.sum(axis=5), "bad_attribute"),
    (lambda x, y: x.reshape((4, 4)), "shape_mismatch"),
    (lambda x, y: x.softmax(axis=1.5), "bad_attribute"),
    (lambda x, y: x.sum(colour=1), "bad_attribute"),
    (lambda x, y: ops.add(x), "wrong_arity"),
    (lambda x, y: x[2], "bad_attribute"),
    (lambda x, y: x[0, 0, 0], "bad_attribute"),
    (lambda x, y: ops.concat([]), "wrong_arity"),
    (lambda x, y: ops.einsum("ij->k", x), "bad_attribute"),
    (lambda x, y: ops.take(x, [3], axis=0), "bad_attribute"),
])
def test_a_mistake_raises_where_it_is_written_with_the_servers_code(xy, expr, code):
    with pytest.raises(E.ValidationError) as err:
        expr(*xy)
    assert (err.value.status, err.value.code) == (422, code)


def test_only_what_is_needed_is_sent(g, xy):
    x, y = xy
    unused = g.input("unused", 1.0)
    (unused * 2).named("elsewhere")
    loss = (x * y).sum().named("loss")
    body = g.to_json(loss, grad_of=loss)
    assert set(body["inputs"]) == {"x", "y"}
    assert [n["id"] for n in body["nodes"]] == [loss.args[0].id, "loss"]
    assert body["grad"] == {"of": "loss", "wrt": ["y"]}  # every parameter by default


def test_gradients_of_intermediates_and_inputs_can_be_asked(g, xy):
    x, y = xy
    h = (x * y).named("h")
    loss = h.sum()
    body = g.to_json(grad_of=loss, wrt=[h, x])
    assert body["grad"] == {"of": loss.id, "wrt": ["h", "x"]}
    assert "outputs" not in body


def test_without_outputs_the_whole_graph_is_sent(g, xy):
    x, y = xy
    a, b = x + y, (x * 2).sum()
    body = g.to_json()
    assert [n["id"] for n in body["nodes"]] == [a.id, b.args[0].id, b.id]
    assert "outputs" not in body and "grad" not in body


def test_a_seed_travels_with_the_gradient(g, xy):
    x, y = xy
    z = x * y
    body = g.to_json(z, grad_of=z, seed=np.full((2, 3), 2.0), dtype="float64", anomaly=True)
    assert body["grad"]["seed"] == {"shape": [2, 3], "dtype": "float64", "data": [[2.0] * 3] * 2}
    assert body["dtype"] == "float64" and body["anomaly"] is True


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"wrt": []}, ValueError),       # wrt without grad_of
    ({"seed": 1.0}, ValueError),
    ({"dtype": "float16"}, ValueError),
])
def test_to_json_refuses(g, xy, kwargs, error):
    with pytest.raises(error):
        g.to_json(xy[0].sum(), **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_tensors_go_as_base64_both_ways(g, dtype):
    value = np.random.default_rng(0).standard_normal((BINARY_OVER + 1,))
    big = g.parameter("big", value)
    small = g.input("small", np.ones(BINARY_OVER))
    body = g.to_json(big * 2, small.sum(), dtype=dtype)
    sent = body["inputs"]["big"]
    assert set(sent) == {"shape", "dtype", "b64", "requires_grad"} and sent["dtype"] == dtype
    assert len(base64.b64decode(sent["b64"])) == value.size * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(decode(sent), value.astype(dtype))
    assert body["inputs"]["small"]["data"] == [1.0] * BINARY_OVER
    assert body["encoding"] == "base64"  # big * 2 comes back large
    assert g.to_json(small.sum(), grad_of=small.sum(), wrt=[small])["encoding"] == "nested"
    assert g.to_json(big.sum(), grad_of=big.sum())["encoding"] == "base64"  # its gradient is big


def test_to_dot_draws_every_node_and_edge_and_a_result(g, xy):
    from client import Result
    x, y = xy
    (x * 2 + y).sum().named("loss")
    dot = g.to_dot()
    assert dot.startswith("digraph gradserve {") and dot.rstrip().endswith("}")
    for n in g:
        assert f'"{n.id}" [' in dot
    assert '"x" -> "mul_0" [label="0"];' in dot
    assert '"mul_0#1" [shape=plaintext, label="2"];' in dot
    assert '"loss" [shape=ellipse, label="loss = sum\\n[]"];' in dot
    assert '"x" [shape=box, label="x\\ninput [2, 3]"]' in dot
    assert '"y" [shape=box, style=filled' in dot
    r = Result({"loss": np.array(42.0), "x": np.array([[0.5, 1, 2]] * 2)},
               {"y": np.ones((3, 4))}, [], {})
    drawn = g.to_dot(r)
    assert "value 42\"" in drawn and "value [[0.5, 1, 2], [0.5, 1, 2]]" in drawn
    assert "grad mean 1, min 1, max 1" in drawn


def test_an_expression_builds_the_nodes_the_operators_would(g):
    x = g.input("x", np.array([[1.0, 2.0], [3.0, 4.0]]))
    w = g.parameter("w", np.array([[0.5], [-0.25]]))
    b = g.parameter("b", np.array([1.0]))
    loss = g.expr("mean(sigmoid(x @ w + b))", name="loss")
    assert (loss.id, loss.op.name, loss.shape) == ("loss", "mean", ())
    by_hand = Graph()
    hx, hw, hb = (by_hand.input("x", x.value), by_hand.parameter("w", w.value),
                  by_hand.parameter("b", b.value))
    want = ((hx @ hw + hb).sigmoid().mean()).named("loss")
    assert g.to_json(loss, grad_of=loss) == by_hand.to_json(want, grad_of=want)
    s = g.expr("sum(x * 2, axis=-1, keepdims=true)")  # an id of its own when not named
    assert s.op.name == "sum" and s.shape == (2, 1) and s.attrs == {"axis": -1, "keepdims": True}


@pytest.mark.parametrize(("text", "code", "column"), [
    ("x @ w @ w", "shape_mismatch", 7),
    ("x + q", "unknown_id", 5),
    ("x.T", "bad_expression", 1),
    ("sum(x, axis=[0, 9])", "bad_attribute", None),
])
def test_an_expression_mistake_raises_the_servers_error_with_its_column(g, text, code, column):
    g.input("x", np.ones((2, 2)))
    g.input("w", np.ones((2, 1)))
    with pytest.raises(E.ValidationError) as err:
        g.expr(text, name="y")
    assert err.value.code == code
    if column is not None:
        assert err.value.problem["errors"][0]["column"] == column


# ---- new values for leaves: the training loop --------------------------------------------

@pytest.mark.parametrize(("value", "error", "says"), [
    (np.ones((3, 2)), ValueError, "shape (2, 3)"),
    (np.ones(6), ValueError, "shape (2, 3)"),
    (1.0, ValueError, "shape (2, 3)"),
    (np.ones((2, 3), bool), TypeError, "not bool"),
    (np.ones((2, 3), complex), TypeError, "not complex128"),
    ([[1, 2, 3], [4, 5]], TypeError, "real numbers"),
    (np.full((2, 3), "x"), TypeError, "real numbers"),
])
def test_a_new_leaf_value_is_checked_for_shape_and_dtype(xy, value, error, says):
    x, _ = xy
    before = x.value.copy()
    with pytest.raises(error, match=re.escape(says)):
        x.value = value
    np.testing.assert_array_equal(x.value, before)  # a refused value changes nothing


def test_only_a_leaf_takes_a_new_value(xy):
    node = xy[0] + xy[1]
    assert node.value is None
    with pytest.raises(AttributeError, match="computed by add"):
        node.value = np.ones((2, 3))


def test_a_new_value_is_sent_by_the_same_graph(g, xy):
    x, y = xy
    loss = (x * y).sum()
    first = g.to_json(loss, grad_of=loss)
    y.value -= 0.5 * np.ones((2, 3))              # in place, as a training step does
    x.value = [[1, 2, 3], [4, 5, 6]]               # ints are numbers: stored as float64
    second = g.to_json(loss, grad_of=loss)
    assert second["nodes"] == first["nodes"] and len(g) == 4  # x, y, mul, sum
    assert decode(second["inputs"]["y"]).tolist() == [[0.5] * 3] * 2
    assert decode(second["inputs"]["x"]).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert x.value.dtype == np.float64


def test_vmap_sends_the_batches_and_names_them(g):
    x = g.input("x", np.ones((2, 3)))
    w = g.parameter("w", np.ones((3, 1)))
    loss = (x @ w).sum()
    body = g.to_json(loss, grad_of=loss, vmap={x: np.zeros((5, 2, 3))})
    assert body["vmap"] == {"inputs": ["x"]}
    assert decode(body["inputs"]["x"]).shape == (5, 2, 3)
    assert decode(body["inputs"]["w"]).shape == (3, 1)
    with pytest.raises(ValueError, match=r"\(B, \*\(2, 3\)\)"):
        g.to_json(loss, vmap={x: np.zeros((5, 3, 2))})
    with pytest.raises(ValueError, match="leaves"):
        g.to_json(loss, vmap={loss: np.zeros((5,))})


def test_vmap_runs_locally_as_per_example_requests(g):
    from client import Client

    x = g.input("x", np.ones(3))
    w = g.parameter("w", np.array([1.0, 2.0, 3.0]))
    loss = (x * w).sum()
    xs = np.arange(12.0).reshape(4, 3)
    with Client.local() as c:
        r = c.evaluate(loss, grad_of=loss, vmap={x: xs}, dtype="float64")
    np.testing.assert_allclose(r[loss], xs @ [1.0, 2.0, 3.0])
    np.testing.assert_allclose(r.grad(w), xs)  # per example: d(x·w)/dw = x
