"""Gradient descent through gradserve: fit y = x @ w + b by evaluating one graph again and again.

    GRADSERVE_URL=http://127.0.0.1:8000 .venv/bin/python examples/python/train.py

The graph is built once; each step sends it with the parameters' new values (the server
plans it once too) and moves them against their gradients, in place.
"""

import os

import numpy as np

from client import Client, Graph

rng = np.random.default_rng(0)
X = rng.standard_normal((64, 3))
Y = X @ np.array([[2.0], [-1.0], [0.5]]) + 0.3      # what the fit should find

g = Graph()
x, y = g.input("x", X), g.input("y", Y)
w, b = g.parameter("w", np.zeros((3, 1))), g.parameter("b", np.zeros(1))
loss = (x @ w + b).mse_loss(y)

url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
with Client(url, api_key=os.environ.get("GRADSERVE_API_KEY")) as c:
    for step in range(100):
        r = c.evaluate(loss, grad_of=loss)           # gradients of every parameter
        for p in g.parameters:
            p.value -= 0.1 * r.grad(p)               # same shape: checked, not rebuilt
        if step % 20 == 0:
            print(f"step {step}: loss = {r[loss]:.6f}")

print("w =", w.value.ravel().round(4).tolist())
print("b =", b.value.round(4).tolist())
