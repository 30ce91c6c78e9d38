"""The Python SDK against a real gunicorn: the README example, local vs remote on every op,
and every error kind raising its class with the server's code."""

from __future__ import annotations

import numpy as np
import pytest

import client.errors as E
from autograd import OPS, Limits
from client import Client, Graph
from client.codec import BINARY_OVER

X = np.array([[1.0, 2.0], [3.0, 4.0]])
W = np.array([[0.5], [-0.25]])
B = np.array([1.0])
F32 = {"rtol": 2e-6, "atol": 1e-7}  # float32 against exact float64 numbers


def reference() -> dict[str, np.ndarray]:
    """The README example by hand in float64: values, and d loss / d w, b, a."""
    a = 1 / (1 + np.exp(-(X @ W + B)))
    dz = a * (1 - a) / a.size
    return {"loss": a.mean(), "a": a, "w": X.T @ dz, "b": dz.sum(axis=0),
            "da": np.full_like(a, 1 / a.size)}


def readme_graph():
    g = Graph()
    x = g.input("x", X)
    w = g.parameter("w", W)
    b = g.parameter("b", B)
    a = (x @ w + b).sigmoid()
    return w, b, a, a.mean()


@pytest.fixture(scope="module")
def remote(server):
    with Client(server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("where", ["remote", "local"])
def test_the_readme_example_gives_the_exact_numbers(remote, where):
    w, b, a, loss = readme_graph()
    c = remote if where == "remote" else Client.local()
    r = c.evaluate(loss, a, grad_of=loss, wrt=[w, b], dtype="float32")
    ref = reference()
    assert r[loss].dtype == np.float32 and r[loss].shape == ()
    np.testing.assert_allclose(r[loss], ref["loss"], **F32)
    np.testing.assert_allclose(r[a], ref["a"], **F32)
    np.testing.assert_allclose(r.grad(w), ref["w"], **F32)
    np.testing.assert_allclose(r.grad(b), ref["b"], **F32)
    assert r.grad(w).shape == (2, 1) and r.grad(b).shape == (1,)
    assert r.warnings == [] and r.stats["nodes"] == 4


def test_float64_and_gradients_of_intermediates_and_default_wrt(remote):
    w, b, a, loss = readme_graph()
    r = remote.evaluate(loss, grad_of=loss, wrt=[a, w], dtype="float64")
    ref = reference()
    np.testing.assert_allclose(r[loss], ref["loss"], rtol=1e-14)
    np.testing.assert_allclose(r.grad(a), ref["da"], rtol=1e-14)
    np.testing.assert_allclose(r.grad(w), ref["w"], rtol=1e-14)
    assert set(remote.evaluate(loss, grad_of=loss).gradients) == {"w", "b"}


def test_large_tensors_travel_as_base64_both_ways(remote):
    rng = np.random.default_rng(1)
    g = Graph()
    p = g.parameter("p", rng.standard_normal((BINARY_OVER + 7,)))
    y = (p * p).tanh()
    loss = y.sum()
    body = g.to_json(y, grad_of=loss)
    assert "b64" in body["inputs"]["p"] and body["encoding"] == "base64"
    r = remote.evaluate(y, grad_of=loss, dtype="float64")
    assert "b64" in r.body["outputs"][y.id] and "b64" in r.body["gradients"]["p"]
    v = p.value
    np.testing.assert_allclose(r[y], np.tanh(v * v), rtol=1e-14)
    np.testing.assert_allclose(r.grad(p), (1 - np.tanh(v * v) ** 2) * 2 * v, rtol=1e-12)


# ---- local and remote agree on every op --------------------------------------------------

# How each op is called on two nodes of one shape; kept in range so values stay finite.
CALLS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: 1.5 - a - b,
    "mul": lambda a, b: a * b * 2,
    "div": lambda a, b: a / (b * b + 1) - 2 / (a * a + 1),
    "broadcast_to": lambda a, b: a.broadcast_to((2, *a.shape)),
    "matmul": lambda a, b: a @ b.T(),
    "pow": lambda a, b: a ** 3,
    "neg": lambda a, b: -a,
    "abs": lambda a, b: a.abs(),
    "transpose": lambda a, b: a.transpose(tuple(reversed(range(a.ndim)))),
    "reshape": lambda a, b: a.reshape((-1,)),
    "sum": lambda a, b: a.sum(axis=0, keepdims=True),
    "mean": lambda a, b: a.mean(-1),
    "exp": lambda a, b: a.tanh().exp(),
    "log": lambda a, b: (a * a + 1).log(),
    "sqrt": lambda a, b: (a * a + 0.5).sqrt(),
    "sin": lambda a, b: a.sin(),
    "cos": lambda a, b: a.cos(),
    "tan": lambda a, b: a.tanh().tan(),
    "relu": lambda a, b: a.relu(),
    "sigmoid": lambda a, b: a.sigmoid(),
    "tanh": lambda a, b: a.tanh(),
    "softmax": lambda a, b: a.softmax(axis=0),
    "mse_loss": lambda a, b: a.mse_loss(b),
    "mae_loss": lambda a, b: a.mae_loss(b),
}
CLOSE = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}


def test_every_registry_op_has_a_call():
    assert set(CALLS) == set(OPS)


def single_op_graphs(rng):
    for name, call in CALLS.items():
        g = Graph()
        p = g.parameter("p", rng.standard_normal((3, 4)))
        q = g.parameter("q", rng.standard_normal((3, 4)))
        y = call(p, q)
        loss = y.sum().named("loss")
        yield name, {"outputs": [y, loss], "grad_of": loss, "wrt": [p, q, y]}


def random_chains(rng, count: int, steps: int = 6):
    """Chains of random ops (those that fit the current shape), with a gradient of the sum
    with respect to both parameters and one intermediate."""
    names = sorted(CALLS)
    for _ in range(count):
        g = Graph()
        p = g.parameter("p", rng.standard_normal((3, 4)))
        q = g.parameter("q", rng.standard_normal((3, 4)))
        cur, made, used = p, [], []
        for _ in range(steps):
            for name in rng.permutation(names):
                other = q if cur.shape == q.shape else g.input(
                    f"in{len(g)}", rng.standard_normal(cur.shape))
                try:
                    cur = CALLS[name](cur, other) + cur.sum() * q.mean()
                except E.ValidationError:  # does not fit this shape: try another op
                    continue
                made.append(cur)
                used.append(name)
                break
        loss = cur.sum()
        yield used, {"outputs": [loss, *made[::2]], "grad_of": loss,
                     "wrt": [p, q, made[len(made) // 2]]}


def assert_agree(local_results, remote_results, dtype):
    for lr, rr in zip(local_results, remote_results, strict=True):
        assert lr.outputs.keys() == rr.outputs.keys()
        assert lr.gradients.keys() == rr.gradients.keys()
        for k in lr.outputs:
            np.testing.assert_allclose(rr[k], lr[k], **CLOSE[dtype], err_msg=k)
            assert rr[k].dtype == dtype
        for k in lr.gradients:
            np.testing.assert_allclose(rr.grad(k), lr.grad(k), **CLOSE[dtype], err_msg=k)
            assert np.isfinite(lr.grad(k)).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_local_and_remote_agree_on_every_op(remote, dtype):
    names, requests = zip(*single_op_graphs(np.random.default_rng(2)), strict=True)
    requests = [{**r, "dtype": dtype} for r in requests]
    remote_results = remote.evaluate_many(requests, concurrency=4)
    local_results = Client.local().evaluate_many(requests)
    assert_agree(local_results, remote_results, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_local_and_remote_agree_on_random_graphs(remote, dtype):
    used, requests = zip(*random_chains(np.random.default_rng(3), 30), strict=True)
    assert set().union(*used) == set(OPS), "the random graphs must cover every op"
    requests = [{**r, "dtype": dtype} for r in requests]
    assert_agree(Client.local().evaluate_many(requests),
                 remote.evaluate_many(requests, concurrency=4), dtype)


def test_info_and_ops_match_the_local_backend(remote):
    info = remote.info()
    assert info["name"] == "gradserve" and info["dtypes"] == ["float32", "float64"]
    assert remote.ops() == Client.local().ops()


# ---- every error kind raises its class with the server's code ----------------------------

def graph_error(build):
    """A request whose graph the builder writes but the server refuses."""
    def make():
        g = Graph()
        x = g.input("x", X)
        w = g.parameter("w", W)
        return build(g, x, w)
    return make


def body(edit):
    def make():
        w, b, a, loss = readme_graph()
        doc = w.graph.to_json(loss, a, grad_of=loss)
        edit(doc)
        return doc
    return make


def node(doc, k):
    return doc["nodes"][k]


# name, the request body, class and code; local=False where only the HTTP layer answers.
REFUSED = [
    ("unknown_op", body(lambda d: node(d, 0).update(op="conv")), E.ValidationError),
    ("unknown_id", body(lambda d: node(d, 1).update(args=["q", "b"])), E.ValidationError),
    ("duplicate_id", body(lambda d: node(d, 1).update(id="x")), E.ValidationError),
    ("cycle", body(lambda d: node(d, 0).update(args=["x", node(d, 2)["id"]])),
     E.ValidationError),
    ("wrong_arity", body(lambda d: node(d, 2).update(args=[])), E.ValidationError),
    ("bad_attribute", body(lambda d: node(d, 3).update(attrs={"axis": 7})), E.ValidationError),
    ("shape_mismatch", body(lambda d: node(d, 0).update(args=["w", "x"])), E.ValidationError),
    ("bad_tensor", body(lambda d: d["inputs"]["x"].update(data=[[1, 2], [3]])),
     E.ValidationError),
    ("seed_required", graph_error(lambda g, x, w: g.to_json(grad_of=x @ w)), E.ValidationError),
]


@pytest.mark.parametrize(("code", "make", "cls"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_graph_raises_the_same_class_and_code_remotely_and_locally(
        remote, code, make, cls):
    doc = make()
    for c in (remote, Client.local()):
        with pytest.raises(cls) as err:
            c.evaluate_json(doc)
        assert (err.value.status, err.value.code) == (422, code), c
        assert err.value.problem["code"] == code and err.value.errors


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("POST", "/v1/evaluate", {"data": b'{"inputs": {', "headers": {
        "Content-Type": "application/json"}}, 400, "malformed_json"),
    ("POST", "/v1/evaluate", {"data": b"{}", "headers": {"Content-Type": "text/plain"}},
     415, "unsupported_media_type"),
    ("GET", "/v2/nothing", {}, 404, "not_found"),
    ("POST", "/v1/evaluate", {"json": {"inputs": {}, "nodes": [], "extra": 1}}, 422,
     "validation_error"),
])
def test_http_level_refusals_raise_their_class(remote, method, path, kwargs, status, code):
    with pytest.raises(E.GradserveError) as err:
        remote.request(method, path, **kwargs)
    assert (err.value.status, err.value.code) == (status, code)
    assert type(err.value) is E.error_class(status)


def test_keys_sizes_and_deadlines_raise_their_classes(start_server):
    s = start_server(api_keys="k1", max_elements=100, deadline_s=1e-6)
    w, b, a, loss = readme_graph()
    with Client(s.url) as c, pytest.raises(E.UnauthorizedError) as err:
        c.info()
    assert (err.value.status, err.value.code) == (401, "unauthorized")

    g = Graph()
    big = g.parameter("big", np.ones(101)).sum()
    with Client(s.url, api_key="k1") as c:
        assert c.info()["limits"]["max_elements"] == 100
        with pytest.raises(E.TooLargeError) as err:
            c.evaluate(big, grad_of=big)
        assert (err.value.status, err.value.code) == (413, "tensor_too_large")
        with pytest.raises(E.DeadlineError) as err:
            c.evaluate(loss, grad_of=loss)
        assert (err.value.status, err.value.code) == (504, "deadline_exceeded")

    local = Client.local(limits=Limits(max_elements=100), deadline_s=1e-6)
    for request, cls, code in [(big, E.TooLargeError, "tensor_too_large"),
                               (loss, E.DeadlineError, "deadline_exceeded")]:
        with pytest.raises(cls) as err:
            local.evaluate(request, grad_of=request)
        assert err.value.code == code
