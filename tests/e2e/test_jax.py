"""JAX through Tesseract-JAX's apply_tesseract on a gradserve model (/tesseract/NAME): a
real gunicorn, references by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tesseract_core import Tesseract
from tesseract_jax import apply_tesseract

from tests.conftest import Server
from tests.service.test_models import EXAMPLES, banana

THETA = np.array([0.4, 0.9])


@pytest.fixture(scope="module")
def logp():
    jax.config.update("jax_enable_x64", True)  # the model computes in float64
    with Server(models_dir=str(EXAMPLES)) as s:
        t = Tesseract.from_url(s.url + "/tesseract/banana")
        yield lambda th: apply_tesseract(t, {"theta": th}, vmap_method="sequential")["logp"]
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("transform", ["plain", "jit"])
def test_values_under_jit(logp, transform):
    f = jax.jit(logp) if transform == "jit" else logp
    np.testing.assert_allclose(f(jnp.asarray(THETA)), banana(THETA)[0], rtol=1e-12)


@pytest.mark.parametrize("transform", [jax.grad, lambda f: jax.jit(jax.grad(f)), jax.jacrev],
                         ids=["grad", "jit-grad", "jacrev"])
def test_reverse_mode_is_the_gradient(logp, transform):
    np.testing.assert_allclose(transform(logp)(jnp.asarray(THETA)), banana(THETA)[1],
                               rtol=1e-12)


def test_forward_mode_jvp_and_jacfwd(logp):
    v = jnp.array([0.3, -1.1])
    _, tangent = jax.jvp(logp, (jnp.asarray(THETA),), (v,))
    np.testing.assert_allclose(tangent, banana(THETA)[1] @ np.asarray(v), rtol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(logp)(jnp.asarray(THETA)), banana(THETA)[1],
                               rtol=1e-12)
