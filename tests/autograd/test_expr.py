"""The expression form (PROTOCOL.md §12): autograd.expr.expand, one table per concern."""

from __future__ import annotations

import time

import numpy as np
import pytest

from autograd import AutogradError, Leaf, Plan
from autograd.expr import MAX_CHARS, expand
from autograd.registry import OPS

KNOWN = ("x", "w", "b")


def node(id, op, args, **attrs) -> dict:
    return {"id": id, "op": op, "args": list(args), **({"attrs": attrs} if attrs else {})}


# ---- what an expression becomes ----------------------------------------------------------

EXPANSIONS = [
    ("mean(sigmoid(x @ w + b))", [node("k:1", "matmul", ["x", "w"]),
                                  node("k:2", "add", ["k:1", "b"]),
                                  node("k:3", "sigmoid", ["k:2"]), node("k", "mean", ["k:3"])]),
    # Python's precedence and associativity
    ("x + w * b", [node("k:1", "mul", ["w", "b"]), node("k", "add", ["x", "k:1"])]),
    ("(x + w) * b", [node("k:1", "add", ["x", "w"]), node("k", "mul", ["k:1", "b"])]),
    ("x - w - b", [node("k:1", "sub", ["x", "w"]), node("k", "sub", ["k:1", "b"])]),
    ("x - (w - b)", [node("k:1", "sub", ["w", "b"]), node("k", "sub", ["x", "k:1"])]),
    ("-x ** 2", [node("k:1", "pow", ["x"], exponent=2), node("k", "neg", ["k:1"])]),
    ("(-x) ** 2", [node("k:1", "neg", ["x"]), node("k", "pow", ["k:1"], exponent=2)]),
    ("x ** -0.5", [node("k", "pow", ["x"], exponent=-0.5)]),
    ("x @ w @ b", [node("k:1", "matmul", ["x", "w"]), node("k", "matmul", ["k:1", "b"])]),
    ("x * -2", [node("k", "mul", ["x", -2])]),
    ("2.5 - x", [node("k", "sub", [2.5, "x"])]),
    # keyword attributes are JSON literals, Python's spellings too
    ("sum(x, axis=-1, keepdims=true)", [node("k", "sum", ["x"], axis=-1, keepdims=True)]),
    ("sum(x, axis=[0, 1], keepdims=False)", [node("k", "sum", ["x"], axis=[0, 1],
                                                   keepdims=False)]),
    ("mean(x, axis=null)", [node("k", "mean", ["x"], axis=None)]),
    ("reshape(x, shape=(2, -1))", [node("k", "reshape", ["x"], shape=[2, -1])]),
    ("mse_loss(x, w)", [node("k", "mse_loss", ["x", "w"])]),
    # an id that is also an op's name is a tensor where a tensor stands
    ("exp(exp)", [node("k", "exp", ["exp"])]),
    # whitespace and lines inside parentheses
    ("(x\n  + w)", [node("k", "add", ["x", "w"])]),
]


@pytest.mark.parametrize("text, nodes", EXPANSIONS, ids=[e[0] for e in EXPANSIONS])
def test_an_expression_becomes_registry_nodes(text, nodes):
    assert expand([], {"k": text}, [*KNOWN, "exp"]) == nodes


def test_keys_nodes_and_inputs_name_each_other_in_any_order():
    given = [node("h", "matmul", ["x", "w"]), node("out", "neg", ["loss"])]
    nodes = expand(given, {"loss": "mean(a)", "a": "sigmoid(h + b)"}, KNOWN)
    assert nodes[:2] == given
    assert nodes.generated == [node("loss", "mean", ["a"]), node("a:1", "add", ["h", "b"]),
                               node("a", "sigmoid", ["a:1"])]


def test_generated_ids_skip_every_id_the_request_defines():
    taken = [node("k:1", "neg", ["x"]), node("k:3", "neg", ["x"])]
    nodes = expand(taken, {"k": "exp(sin(cos(x)))", "k:2": "abs(x)"}, KNOWN)
    ids = [n["id"] for n in nodes.generated]
    assert ids == ["k:4", "k:5", "k", "k:2"]
    assert len(set(ids) | {"k:1", "k:3"}) == 6


def test_a_long_key_is_cut_so_generated_ids_stay_valid_ids():
    key = "k" * 128
    nodes = expand([], {key: "exp(sin(x))"}, KNOWN)
    assert nodes[0]["id"] == "k" * 126 + ":1"
    assert nodes[1]["id"] == key


def test_no_expr_is_the_nodes_unchanged():
    given = [node("h", "neg", ["x"])]
    assert expand(given, None, KNOWN) == given
    assert expand(given, {}, KNOWN) == given


def test_division_and_indexing_map_to_their_ops_only_when_the_registry_has_them():
    for text, op in (("x / 2", "div"), ("x[0, 1:, None, ...]", "getitem")):
        if op in OPS:
            (n,) = expand([], {"k": text}, KNOWN)
            assert n["op"] == op
            if op == "getitem":
                assert n["attrs"] == {"index": [0, {"start": 1}, None, "..."]}
        else:
            with pytest.raises(AutogradError, match=f"no {op} op") as e:
                expand([], {"k": text}, KNOWN)
            assert e.value.code == "bad_expression"


def test_expanded_nodes_compute_the_protocol_example():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    w, b = np.array([[0.5], [-0.25]]), np.array([1.0])
    nodes = expand([], {"loss": "mean(sigmoid(x @ w + b))"}, KNOWN)
    plan = Plan(nodes, {"x": Leaf(x.shape), "w": Leaf(w.shape, True), "b": Leaf(b.shape, True)},
                grad={"of": "loss"}, dtype="float64")
    r = plan.run({"x": x, "w": w, "b": b})
    assert plan.outputs == ["loss"]  # generated nodes are used, so never default outputs
    np.testing.assert_allclose(r.outputs["loss"], 0.7743165, rtol=1e-6)
    np.testing.assert_allclose(r.gradients["w"], [[0.3220257], [0.4949049]], rtol=1e-6)


# ---- mistakes: code, column (1-based characters), and the key --------------------------------

MISTAKES = [
    # text, code, column, words in the detail
    ("x + * w", "bad_expression", 5, "invalid syntax"),
    ("sum(x", "bad_expression", 4, "never closed"),
    ("é + (x @ w", "bad_expression", 5, "never closed"),
    ("x + q", "unknown_id", 5, "'q' is neither"),
    ("foo(x)", "unknown_op", 1, "unknown op 'foo'"),
    ("exp(x, w)", "wrong_arity", 1, "exp takes 1"),
    ("sum(x, axis='a')", "bad_attribute", 13, "'axis' must be"),
    ("sum(x, axes=0)", "bad_attribute", 13, "sum has no attribute 'axes'"),
    ("reshape(x)", "bad_attribute", 1, "needs attribute 'shape'"),
    ("sum(x, axis=w)", "bad_expression", 13, "JSON literal"),
    ("sum(x, **w)", "bad_expression", 10, "name=value"),
    ("sigmoid(2)", "bad_expression", 9, "must be a tensor"),
    ("x ** w", "bad_expression", 6, "exponent of ** must be a number"),
    ("x ** (1 + 1)", "bad_expression", 7, "exponent"),
    ("2 ** 3", "bad_expression", 3, "base of ** must be a tensor"),
    ("2 * 3 * x", "bad_expression", 1, "one side must be a tensor"),
    ("x", "bad_expression", 1, "only a name"),
    ("-2", "bad_expression", 1, "only a number"),
    ("sum", "bad_expression", 1, "only a name"),
    ("x + sum", "bad_expression", 5, "'sum' is an op"),
    ("x + true", "bad_expression", 5, "true is not a tensor"),
    ("x + True", "bad_expression", 5, "not a tensor or a number"),
    ("x + 'a'", "bad_expression", 5, "not a tensor or a number"),
    ("x + 1j", "bad_expression", 5, "not a tensor or a number"),
    ("x * 1e999", "bad_expression", 5, "finite"),
    ("x * " + "9" * 400, "bad_expression", 5, "finite"),
    ("x.T", "bad_expression", 1, "attribute access"),
    ("exp(x).sum()", "bad_expression", 1, "attribute access"),
    ("x.__class__.__bases__", "bad_expression", 1, "attribute access"),
    ("(lambda: x)()", "bad_expression", 2, "lambda"),
    ("exp(lambda: x)", "bad_expression", 5, "lambda"),
    ("[a for a in x]", "bad_expression", 1, "comprehension"),
    ("sum(a for a in x)", "bad_expression", 4, "comprehension"),
    ("__import__('os')", "unknown_op", 1, "unknown op '__import__'"),
    ("eval('x')", "unknown_op", 1, "unknown op 'eval'"),
    ("exp(x)(w)", "bad_expression", 1, "only ops are called"),
    ("(x)(w)", "unknown_op", 2, "unknown op 'x'"),
    ("x < w", "bad_expression", 1, "comparisons"),
    ("x and w", "bad_expression", 1, "and/or"),
    ("x if w else b", "bad_expression", 1, "where(c, x, y)"),
    ("(y := x)", "bad_expression", 2, ":="),
    ("exp(*x)", "bad_expression", 5, "*args"),
    ("x // w", "bad_expression", 1, "FloorDiv"),
    ("~x", "bad_expression", 1, "Invert"),
    ("+x", "bad_expression", 1, "only -x"),
    ("x\0", "bad_expression", 1, "null bytes"),
    ("x + \ud800", "bad_expression", 1, "not parseable"),
    ("1" * 5000, "bad_expression", 1, "4300 digits"),
    # nesting the parser refuses: parentheses, unary minus, a long chain, ** towers
    ("(" * 300 + "x" + ")" * 300, "bad_expression", 201, "too many nested parentheses"),
    ("-" * 9999 + "x", "bad_expression", 1, "too deeply"),
    ("+".join(["x"] * 4000), "bad_expression", 1, "too deeply"),
]


@pytest.mark.parametrize("text, code, column, words", MISTAKES, ids=[m[0][:40] for m in MISTAKES])
def test_a_mistake_names_its_key_and_column(text, code, column, words):
    with pytest.raises(AutogradError) as caught:
        expand([node("h", "neg", ["x"])], {"ok": "exp(x)", "k": text}, KNOWN)
    e = caught.value
    assert (e.code, e.path, e.column) == (code, ("expr", "k"), column), e.detail
    assert words in e.detail and f"column {column}" in e.detail


def test_a_key_that_is_already_an_id_is_refused():
    for taken in ("x", "h"):
        with pytest.raises(AutogradError, match="already") as e:
            expand([node("h", "neg", ["x"])], {taken: "exp(x)"}, KNOWN)
        assert e.value.path == ("expr", taken)


def test_sizes_are_refused_before_parsing():
    with pytest.raises(AutogradError) as e:
        expand([], {"k": "x+" * (MAX_CHARS // 2) + "x"}, KNOWN)
    assert (e.value.code, e.value.path) == ("expression_too_large", ("expr", "k"))
    with pytest.raises(AutogradError) as e:
        expand([node("h", "neg", ["x"])], {"a": "exp(x)", "b": "exp(x)"}, KNOWN, max_nodes=2)
    assert e.value.code == "graph_too_large"
    with pytest.raises(AutogradError) as e:  # the expansion itself passes the limit
        expand([], {"a": "exp(exp(exp(x)))"}, KNOWN, max_nodes=2)
    assert (e.value.code, e.value.path) == ("graph_too_large", ("expr", "a"))


HOSTILE = ["x" * 100_000, "(" * 10_000 + "x" + ")" * 10_000, "-" * 9_999 + "x",
           "[" * 5_000 + "]" * 5_000, "x" + "**9" * 3_000, "9**9**9**9**9**9",
           "x+" * 4_999 + "x", "exp(" * 2_000 + "x" + ")" * 2_000, "1" * 9_999,
           "sum(x, axis=" + "[" * 4_000 + "]" * 4_000]


@pytest.mark.parametrize("text", HOSTILE, ids=[h[:12] for h in HOSTILE])
def test_hostile_expressions_are_refused_in_milliseconds(text):
    best = float("inf")
    for _ in range(3):  # the best of three: a shared machine may pause any one run
        start = time.perf_counter()
        with pytest.raises(AutogradError) as e:
            expand([], {"k": text}, KNOWN)
        best = min(best, time.perf_counter() - start)
    assert e.value.code in ("bad_expression", "expression_too_large")
    assert e.value.path == ("expr", "k")
    assert best < 0.1


def test_an_engine_error_in_an_expanded_node_is_moved_to_its_expression():
    nodes = expand([node("h", "neg", ["x"])], {"loss": "mean(sigmoid(x @ b + w))"}, KNOWN)
    with pytest.raises(AutogradError) as caught:
        Plan(nodes, {"x": Leaf((2, 2)), "w": Leaf((2, 1)), "b": Leaf((1,))})
    e = nodes.locate(caught.value)
    assert (e.code, e.path, e.column) == ("shape_mismatch", ("expr", "loss"), 16)
    assert e.detail.startswith("expr 'loss', column 16: node 'loss:1' (matmul)")
    client = AutogradError("x", path=("nodes", 0, "args"))  # the client's own node: unmoved
    assert nodes.locate(client).path == ("nodes", 0, "args")
