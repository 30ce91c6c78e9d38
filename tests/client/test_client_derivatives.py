"""The SDK's derivatives beyond one gradient (PROTOCOL.md §8, §9): the JSON it writes, the
arrays it returns, and the errors it raises, through Client.local().

The model is small enough for every derivative to be written by hand:
z = A @ w + b, y = tanh(z), f = sum(y * y).
"""

from __future__ import annotations

import numpy as np
import pytest

import client.errors as E
from autograd import Limits
from client import Client, Graph, Result, Shapes
from client.codec import dumps

A = np.array([[1.0, -0.5, 0.25], [0.3, 0.2, -1.0], [-0.7, 0.4, 0.9], [0.1, -0.3, 0.5]])
W = np.array([[0.2], [-0.4], [0.6]])
B = np.array([[0.1], [-0.2], [0.3], [0.05]])
VW = np.array([[1.0], [2.0], [-1.0]])  # a direction in w's space
VB = np.array([[0.5], [-1.0], [0.25], [2.0]])  # and in b's
EXACT = {"rtol": 1e-12, "atol": 1e-13}


def model():
    g = Graph()
    a = g.input("A", A)
    w, b = g.parameter("w", W), g.parameter("b", B)
    y = (a @ w + b).tanh().named("y")
    f = (y * y).sum().named("f")
    return {"w": w, "b": b, "y": y, "f": f}


def by_hand() -> dict[str, np.ndarray]:
    y = np.tanh(A @ W + B)
    d = 1 - y * y                       # dy/dz
    h = 2 * d * (1 - 3 * y * y)         # d²f/dz², f = sum(tanh(z)²)
    return {"y": y, "d": d, "h": h, "f": (y * y).sum(), "gw": A.T @ (2 * y * d),
            "gb": 2 * y * d}


def jac_y_w(ref):
    """dy/dw in (*shape(y), *shape(w)): (4, 1, 3, 1)."""
    return (ref["d"] * A)[:, None, :, None]


def jac_y_b(ref):
    return np.diag(ref["d"].ravel()).reshape(4, 1, 4, 1)


SEEDS = np.array([[[1.0], [0.0], [2.0], [-1.0]], [[0.0], [1.0], [0.0], [3.0]]])  # k = 2
VWS = np.stack([VW, -2 * VW, np.ones((3, 1))])  # k = 3 tangents of w

F64 = {"dtype": "float64"}

# name, the call (client, nodes), and the expected arrays from by_hand().
CASES = [
    ("jvp", lambda c, n: c.jvp(n["y"], {n["w"]: VW}, **F64),
     lambda r: r["d"] * (A @ VW)),
    ("jvp by ids", lambda c, n: c.jvp("y", {"w": VW, n["b"]: VB}, **F64),
     lambda r: r["d"] * (A @ VW + VB)),
    ("jvp of two", lambda c, n: c.jvp([n["y"], n["f"]], {n["b"]: VB}, **F64),
     lambda r: (r["d"] * VB, (r["gb"] * VB).sum())),
    ("jvp batched", lambda c, n: c.jvp(n["y"], {n["w"]: VWS}, batch=True, **F64),
     lambda r: np.stack([r["d"] * (A @ v) for v in VWS])),
    ("vjp", lambda c, n: c.vjp(n["y"], SEEDS[0], n["w"], **F64),
     lambda r: A.T @ (r["d"] * SEEDS[0])),
    ("vjp of every parameter", lambda c, n: c.vjp(n["y"], SEEDS[1], **F64),
     lambda r: (A.T @ (r["d"] * SEEDS[1]), r["d"] * SEEDS[1])),
    ("vjp batched", lambda c, n: c.vjp(n["y"], SEEDS, [n["w"]], batch=True, **F64),
     lambda r: (np.stack([A.T @ (r["d"] * s) for s in SEEDS]),)),
    ("hvp", lambda c, n: c.hvp(n["f"], {n["w"]: VW}, wrt=n["w"], **F64),
     lambda r: A.T @ (r["h"] * (A @ VW))),
    ("hvp block", lambda c, n: c.hvp(n["f"], {n["b"]: VB}, wrt=["w", n["b"]], **F64),
     lambda r: (A.T @ (r["h"] * VB), r["h"] * VB)),
    ("hvp seeded", lambda c, n: c.hvp(n["y"], {"w": VW}, "w", seed=SEEDS[0], **F64),
     lambda r: A.T @ (SEEDS[0] * -2 * r["y"] * r["d"] * (A @ VW))),  # tanh'' = -2 y (1 - y²)
    ("hvp batched", lambda c, n: c.hvp(n["f"], {n["w"]: VWS}, wrt=n["w"], batch=True, **F64),
     lambda r: np.stack([A.T @ (r["h"] * (A @ v)) for v in VWS])),
    ("jacobian", lambda c, n: c.jacobian(n["y"], n["w"], **F64), jac_y_w),
    ("jacobian of every parameter", lambda c, n: c.jacobian(n["y"], **F64),
     lambda r: (jac_y_w(r), jac_y_b(r))),
    ("jacobians of two", lambda c, n: c.jacobian([n["y"], n["f"]], [n["b"]], **F64),
     lambda r: ((jac_y_b(r),), (r["gb"],))),
]


@pytest.fixture
def local():
    with Client.local() as c:
        yield c


def assert_same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
        return
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, **EXACT)


@pytest.mark.parametrize(("name", "call", "want"), CASES, ids=[c[0] for c in CASES])
def test_each_derivative_is_the_one_written_by_hand(local, name, call, want):
    assert_same(call(local, model()), want(by_hand()))


def everything(n) -> dict:
    """One request with all four: grad (batched), jvp, hvp and jacobian."""
    return {"grad_of": n["y"], "wrt": [n["w"]], "seed": SEEDS, "batch": True,
            "jvp": {"of": [n["y"]], "tangents": {n["w"]: VW}},
            "hvp": {"of": n["f"], "tangents": {n["b"]: VB}, "wrt": [n["w"]]},
            "jacobian": {"of": [n["y"]], "wrt": [n["b"]]}}


def test_one_request_asks_for_all_four_and_the_result_carries_them(local):
    n = model()
    r = local.evaluate(n["f"], **everything(n), dtype="float64")
    ref = by_hand()
    np.testing.assert_allclose(r[n["f"]], ref["f"], **EXACT)
    np.testing.assert_allclose(r.grad(n["w"]), np.stack([A.T @ (ref["d"] * s) for s in SEEDS]),
                               **EXACT)
    np.testing.assert_allclose(r.jvp[n["y"]], ref["d"] * (A @ VW), **EXACT)
    np.testing.assert_allclose(r.hvp["w"], A.T @ (ref["h"] * VB), **EXACT)
    np.testing.assert_allclose(r.jacobians[n["y"]]["b"], jac_y_b(ref), **EXACT)
    assert set(r.body) == {"outputs", "gradients", "jvp", "hvp", "jacobians", "warnings",
                           "stats"}
    again = Result.from_body(r.body)  # what a remote client decodes from the same body
    np.testing.assert_array_equal(again.jacobians["y"][n["b"]], r.jacobians["y"]["b"])
    np.testing.assert_array_equal(again.hvp[n["w"]], r.hvp["w"])
    assert "jvp=['y']" in repr(r)


@pytest.mark.parametrize(("asked", "members"), [
    ({}, set()),
    ({"jvp": {"tangents": {"w": VW}}}, {"jvp"}),
    ({"jacobian": {"of": ["f"]}}, {"jacobians"}),
])
def test_a_derivative_member_is_in_the_body_only_when_asked(local, asked, members):
    n = model()
    r = local.evaluate(n["f"], **asked)
    assert set(r.body) - {"outputs", "gradients", "warnings", "stats"} == members
    assert set(Result.from_body(r.body).body) == set(r.body)
    for m in ("jvp", "hvp", "jacobians"):
        assert bool(getattr(r, m)) is (m in members)


# ---- the JSON the builder writes --------------------------------------------------------

def test_the_members_are_written_as_protocol_section_8_says():
    n = model()
    body = n["f"].graph.to_json(jvp={"of": n["y"], "tangents": {"w": VW}, "batch": False},
                                hvp={"of": "f", "tangents": {n["b"]: VB}, "seed": None},
                                jacobian={"of": [n["y"], "y"]}, grad_of=n["y"], seed=SEEDS,
                                batch=True, wrt=["w"], dtype="float64")
    assert body["jvp"] == {"of": ["y"], "tangents": {"w": _tensor(VW)}, "batch": False}
    assert body["hvp"] == {"of": "f", "tangents": {"b": _tensor(VB)}, "wrt": ["w", "b"]}
    assert body["jacobian"] == {"of": ["y"], "wrt": ["w", "b"]}  # every parameter, as grad's
    assert body["grad"] == {"of": "y", "wrt": ["w"], "batch": True, "seed": _tensor(SEEDS)}
    assert set(body["inputs"]) == {"A", "w", "b"} and "outputs" not in body


def _tensor(a):
    return {"shape": list(a.shape), "dtype": "float64", "data": a.tolist()}


def test_the_body_of_shapes_carries_no_data():
    n = model()
    body = n["f"].graph.to_json(n["f"], jvp={"tangents": {"w": VW}}, grad_of=n["y"],
                                seed=SEEDS[0], values=False)
    assert body["inputs"]["A"] == {"shape": [4, 3], "requires_grad": False}
    assert body["jvp"]["tangents"] == {"w": {"shape": [3, 1]}}
    assert body["grad"]["seed"] == {"shape": [4, 1]}
    assert "data" not in dumps(body).decode()


def test_a_large_derivative_asks_for_base64():
    g = Graph()
    x = g.parameter("x", np.ones(40))
    y = (x * 2).named("y")
    assert g.to_json(y, jvp={"tangents": {x: np.ones(40)}})["encoding"] == "nested"
    assert g.to_json(jacobian={"of": [y]})["encoding"] == "base64"  # 40 x 40 > 1024
    k = np.ones((30, 40))
    assert g.to_json(y, jvp={"of": [y], "tangents": {x: k}, "batch": True})["encoding"] == \
        "base64"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"jvp": {"tangent": {}}}, TypeError),             # a misspelt key
    ({"jvp": [1]}, TypeError),
    ({"jvp": {"tangents": [VW]}}, TypeError),
    ({"hvp": {"of": 3}}, TypeError),                   # neither a Node nor an id
    ({"batch": True}, ValueError),                     # batch without grad_of
])
def test_the_builder_refuses_what_is_not_a_request(kwargs, error):
    n = model()
    with pytest.raises(error):
        n["f"].graph.to_json(n["f"], **kwargs)


def test_a_request_needs_one_node_to_know_its_graph(local):
    with pytest.raises(TypeError, match="at least one Node"):
        local.jvp("y", {"w": VW})


# ---- /v1/shapes -------------------------------------------------------------------------

def test_shapes_are_those_evaluate_returns_and_nothing_is_computed(local, monkeypatch):
    n = model()
    r = local.evaluate(n["f"], **everything(n))
    import autograd.graph
    monkeypatch.setattr(autograd.graph.Plan, "run", None)  # planning only
    s = local.shapes(n["f"], **everything(n))
    assert isinstance(s, Shapes)
    assert s.outputs == {k: v.shape for k, v in r.outputs.items()}
    assert s.gradients == {k: v.shape for k, v in r.gradients.items()}
    assert s.jvp == {k: v.shape for k, v in r.jvp.items()}
    assert s.hvp == {k: v.shape for k, v in r.hvp.items()}
    assert s.jacobians[n["y"]][n["b"]] == r.jacobians["y"]["b"].shape == (4, 1, 4, 1)
    assert s.nodes["y"] == {"op": "tanh", "shape": [4, 1], "dtype": "float32"}
    assert s.cost["flops"] > 0 and s.cost["peak_bytes"] > 0
    assert s.cost["response_bytes"] >= len(dumps({k: v for k, v in r.body.items()
                                                  if k not in ("warnings", "stats")}))


def test_shapes_answers_empty_members_when_nothing_is_asked(local):
    n = model()
    s = local.shapes(n["f"])
    assert (s.gradients, s.jvp, s.hvp, s.jacobians) == ({}, {}, {}, {})
    assert s.outputs == {"f": ()}


# ---- errors: the server's class, code and pointer ---------------------------------------

def body_of(**kwargs):
    n = model()
    resolved = {k: v(n) if callable(v) else v for k, v in kwargs.items()}
    return n["f"].graph.to_json(n["f"], **resolved)


# The request (to_json's arguments), client settings, class, code and pointer.
REFUSED = [
    ({"jvp": {"tangents": {"q": VW}}}, {}, E.ValidationError, "unknown_id", "/jvp/tangents/q"),
    ({"jvp": {"tangents": {"y": VB}}}, {}, E.ValidationError, "unknown_id", "/jvp/tangents/y"),
    ({"jvp": {"tangents": {"w": VB}}}, {}, E.ValidationError, "shape_mismatch",
     "/jvp/tangents/w"),
    ({"jvp": {"of": ["q"], "tangents": {"w": VW}}}, {}, E.ValidationError, "unknown_id",
     "/jvp/of/0"),
    ({"jvp": {"tangents": {"w": VWS, "b": np.ones((2, 4, 1))}, "batch": True}}, {},
     E.ValidationError, "shape_mismatch", "/jvp/tangents"),
    ({"jvp": {"tangents": {"w": VW}, "batch": True}}, {}, E.ValidationError, "shape_mismatch",
     "/jvp/tangents/w"),
    ({"hvp": {"of": "y", "tangents": {"w": VW}}}, {}, E.ValidationError, "seed_required",
     "/hvp"),
    ({"hvp": {"of": "y", "tangents": {"w": VW}, "seed": VW}}, {}, E.ValidationError,
     "shape_mismatch", "/hvp/seed"),
    ({"hvp": {"of": "f", "tangents": {"w": VW}, "wrt": ["y"]}}, {}, E.ValidationError,
     "unknown_id", "/hvp/wrt/0"),
    ({"hvp": {"of": "q", "tangents": {"w": VW}}}, {}, E.ValidationError, "unknown_id",
     "/hvp/of"),
    ({"grad_of": "y", "batch": True}, {}, E.ValidationError, "seed_required", "/grad/seed"),
    ({"grad_of": "y", "batch": True, "seed": B}, {}, E.ValidationError, "shape_mismatch",
     "/grad/seed"),
    ({"jacobian": {"of": ["q"]}}, {}, E.ValidationError, "unknown_id", "/jacobian/of/0"),
    ({"jacobian": {"of": ["y"], "wrt": ["y"]}}, {}, E.ValidationError, "unknown_id",
     "/jacobian/wrt/0"),
    ({"jacobian": {"of": ["y"], "wrt": ["b"]}}, {"limits": Limits(max_elements=15)},
     E.TooLargeError, "tensor_too_large", "/jacobian"),
]


@pytest.mark.parametrize(("request_", "settings", "cls", "code", "at"), REFUSED,
                         ids=[f"{r[3]}{r[4]}" for r in REFUSED])
@pytest.mark.parametrize("route", ["evaluate", "shapes"])
def test_a_refused_derivative_raises_the_servers_error(request_, settings, cls, code, at, route):
    body = body_of(**request_)
    with Client.local(**settings) as c, pytest.raises(cls) as err:
        (c.evaluate_json if route == "evaluate" else c.shapes_json)(body)
    e = err.value
    assert (e.code, e.problem["code"], e.status) == (code, code, 413 if cls is
                                                     E.TooLargeError else 422)
    assert [x["pointer"] for x in e.errors] == [at]
