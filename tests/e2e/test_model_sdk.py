"""The SDK's models (client/model.py) against a real gunicorn and the local backend: the same
calls, the same NumPy answers, right against references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client import Client, GradserveError, Model
from tests.conftest import Server
from tests.e2e.test_umbridge import numeric_jacobian
from tests.service.test_models import banana, examples_and_affine, gauss


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return examples_and_affine(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def remote(models_dir):
    with Server(models_dir=str(models_dir)) as s, Client(s.url) as c:
        yield c


@pytest.fixture(scope="module", params=["remote", "local"])
def c(request, models_dir):
    if request.param == "local":
        return Client.local(models_dir=models_dir)
    return request.getfixturevalue("remote")


def test_models_are_listed_and_described(c):
    assert [m["name"] for m in c.models()] == ["affine", "banana", "gauss"]
    m = c.model("affine")
    assert isinstance(m, Model) and m.dtype == "float64"
    assert m.inputs == {"A": (2, 3), "x": (3,)} and m.outputs == {"y": (2,), "loss": ()}


@pytest.mark.parametrize("name, reference", [("gauss", gauss), ("banana", banana)])
def test_values_and_gradients_come_back_as_arrays(c, name, reference):
    m = c.model(name)
    theta = np.array([0.3, -0.8])
    value, grad = reference(theta)
    out = m(theta)
    assert set(out) == {"logp"} and isinstance(out["logp"], np.ndarray)
    np.testing.assert_allclose(out["logp"], value, rtol=1e-12)
    np.testing.assert_allclose(m.grad(theta), grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.grad({"theta": theta}, seed=2.0), 2 * grad, rtol=1e-12)


def test_a_two_input_model_takes_a_dict_and_names_of(c):
    m = c.model("affine")
    rng = np.random.default_rng(1)
    point = {"A": rng.normal(size=(2, 3)), "x": rng.normal(size=3)}
    y = point["A"] @ point["x"] + [0.5, -0.5]
    out = m(point)
    np.testing.assert_allclose(out["y"], y, rtol=1e-12)
    grads = m.grad(point, of="loss")
    np.testing.assert_allclose(grads["x"], 2 * point["A"].T @ y, rtol=1e-12)
    np.testing.assert_allclose(grads["A"], 2 * np.outer(y, point["x"]), rtol=1e-12)
    r = m.evaluate(point, grad_of="y", seed=[1.0, 0.0], wrt=["x"])
    np.testing.assert_allclose(r.grad("x"), point["A"][0], rtol=1e-12)
    with pytest.raises(TypeError, match="of="):
        m.grad(point)
    with pytest.raises(TypeError, match="dict by name"):
        m(point["x"])


def test_local_and_remote_agree(remote, models_dir):
    local = Client.local(models_dir=models_dir)
    point = {"A": np.arange(6.0).reshape(2, 3), "x": np.array([1.0, -1.0, 2.0])}
    a, b = remote.model("affine"), local.model("affine")
    for key in ("y", "loss"):
        np.testing.assert_allclose(a(point)[key], b(point)[key], rtol=1e-15)
    for key, g in a.grad(point, of="loss").items():
        np.testing.assert_allclose(g, b.grad(point, of="loss")[key], rtol=1e-15)


@pytest.mark.parametrize("call, status, code", [
    (lambda c: c.model("nope"), 404, "unknown_model"),
    (lambda c: c.model("gauss")(np.zeros(3)), 422, "shape_mismatch"),
    (lambda c: c.model("gauss")({"phi": np.zeros(2)}), 422, "unknown_id"),
])
def test_refusals_raise_the_servers_code(remote, call, status, code):
    with pytest.raises(GradserveError) as e:
        call(remote)
    assert (e.value.status, e.value.code) == (status, code)


def test_jvp_hvp_and_jacobian_match_finite_differences(remote):
    m = remote.model("banana")
    theta, v = np.array([0.4, 0.9]), np.array([0.3, -1.1])
    J = numeric_jacobian(lambda t: m(t)["logp"], theta)
    np.testing.assert_allclose(m.jvp(theta, v)["logp"], J @ v, rtol=1e-6)
    np.testing.assert_allclose(m.jacobian(theta)["logp"]["theta"], J, rtol=1e-6)
    H = numeric_jacobian(lambda t: m.grad(t), theta)
    np.testing.assert_allclose(m.hvp(theta, v), H @ v, rtol=1e-6)
