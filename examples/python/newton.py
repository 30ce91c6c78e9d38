"""Logistic regression fitted by Newton-CG, each Hessian-vector product one gradserve call.

    GRADSERVE_URL=http://127.0.0.1:8000 python examples/python/newton.py

The loss is composed from v1 ops (matmul, sigmoid, log, mean, ...): the mean
negative log-likelihood plus an L2 penalty. scipy's Newton-CG drives the fit:
`fun` asks gradserve for the loss and its gradient, `hessp` for H·p
(`c.hvp`). Plain gradient descent on gradserve's gradients finds the same
optimum; both are printed, one line each, and must agree.
"""

import os

import numpy as np
from scipy.optimize import minimize

from client import Client, Graph

LAM = 0.05  # L2 penalty: the optimum is unique and gradient descent converges fast


def make_data(n: int = 200, d: int = 4, seed: int = 0):
    """Features and 0/1 labels drawn from a known logistic model (not separable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w_true = rng.standard_normal((d, 1))
    y = (rng.random((n, 1)) < 1 / (1 + np.exp(-x @ w_true))).astype(float)
    return x, y


def logistic_loss(x, y, w_value):
    """The graph of the loss at w: mean(-y log p - (1 - y) log(1 - p)) + LAM * sum(w²)."""
    g = Graph()
    features, labels = g.input("x", x), g.input("y", y)
    w = g.parameter("w", np.reshape(w_value, (-1, 1)))
    p = (features @ w).sigmoid()
    nll = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    return w, (nll + LAM * (w * w).sum()).named("loss")


def main() -> None:
    x, y = make_data()
    d = x.shape[1]
    url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
    hvp_calls = 0
    with Client(url, api_key=os.environ.get("GRADSERVE_API_KEY"), timeout=30) as c:

        def loss_and_grad(w_value):
            w, loss = logistic_loss(x, y, w_value)
            r = c.evaluate(loss, grad_of=loss, wrt=[w], dtype="float64")
            return float(r[loss]), r.grad(w).ravel()

        def hessp(w_value, v):
            nonlocal hvp_calls
            hvp_calls += 1
            w, loss = logistic_loss(x, y, w_value)
            return c.hvp(loss, {w: v.reshape(-1, 1)}, wrt=w, dtype="float64").ravel()

        fit = minimize(loss_and_grad, np.zeros(d), jac=True, hessp=hessp, method="Newton-CG",
                       options={"xtol": 1e-10})
        assert fit.success, fit.message

        # Plain gradient descent, step 1/L with L bounding the Hessian's largest eigenvalue.
        step = 1 / (0.25 * np.linalg.eigvalsh(x.T @ x / len(x)).max() + 2 * LAM)
        w_gd, steps = np.zeros(d), 0
        while True:
            _, g = loss_and_grad(w_gd)
            if np.linalg.norm(g) < 1e-10 or steps == 10_000:
                break
            w_gd, steps = w_gd - step * g, steps + 1

    print(f"newton-cg: {fit.nit} iterations, {hvp_calls} hessian-vector products")
    print(f"gradient descent: {steps} steps")
    print("newton w =", fit.x.tolist())
    print("descent w =", w_gd.tolist())
    # Newton-CG stops once its curvature test sees steps near machine epsilon (|g| ~ 1e-8)
    np.testing.assert_allclose(fit.x, w_gd, atol=1e-6)


if __name__ == "__main__":
    main()
