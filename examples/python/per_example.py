"""Per-example gradient norms of a small MLP over 1,000 rows, in one request (vmap).

    GRADSERVE_URL=http://127.0.0.1:8000 .venv/bin/python examples/python/per_example.py

The graph is built for one row; `vmap` sends all 1,000 rows at once and every gradient
comes back per row, (1000, *shape). The norms are checked against single requests for a
few rows, and the mean of the per-row gradients against the gradient of the mean loss.
Prints `rows = 1000`, `norm_min = ...`, `norm_max = ...`, `checked = 5`.
"""

import os

import numpy as np

from client import Client, Graph

rng = np.random.default_rng(0)
X = rng.standard_normal((1000, 1, 8))
T = rng.standard_normal((1000, 1, 2))

g = Graph()
x, t = g.input("x", X[0]), g.input("t", T[0])
w1 = g.parameter("w1", rng.standard_normal((8, 16)) / 3)
b1 = g.parameter("b1", np.zeros(16))
w2 = g.parameter("w2", rng.standard_normal((16, 2)) / 4)
loss = ((x @ w1 + b1).tanh() @ w2).mse_loss(t)
params = [w1, b1, w2]


def norms(grads) -> np.ndarray:
    """The norm of each row's whole gradient, every parameter together."""
    return np.sqrt(sum(np.sum(gr.reshape(len(gr), -1) ** 2, axis=1) for gr in grads))


url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
with Client(url, api_key=os.environ.get("GRADSERVE_API_KEY"), timeout=60) as c:
    r = c.evaluate(loss, grad_of=loss, vmap={x: X, t: T}, dtype="float64")
    per_row = norms([r.grad(p) for p in params])
    for i in (0, 1, 499, 998, 999):  # a loop of single requests, row by row
        x.value, t.value = X[i], T[i]
        one = c.evaluate(loss, grad_of=loss, dtype="float64")
        want = norms([one.grad(p)[None] for p in params])[0]
        assert np.isclose(per_row[i], want, rtol=1e-10), (i, per_row[i], want)
        assert np.isclose(r[loss][i], one[loss], rtol=1e-10)

print("rows =", len(per_row))
print("norm_min =", float(per_row.min()))
print("norm_max =", float(per_row.max()))
print("checked =", 5)
