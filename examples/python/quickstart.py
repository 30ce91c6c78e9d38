"""The README's Python example: values and gradients of a tiny network from gradserve.

    GRADSERVE_URL=http://127.0.0.1:8000 .venv/bin/python examples/python/quickstart.py

Prints one line per value and per gradient: `loss = 0.77431...`, `grad w = [[...], [...]]`.
"""

import os

import numpy as np

from client import Client, Graph

g = Graph()
x = g.input("x", np.array([[1.0, 2.0], [3.0, 4.0]]))
w = g.parameter("w", np.array([[0.5], [-0.25]]))  # requires_grad
b = g.parameter("b", np.array([1.0]))
a = (x @ w + b).sigmoid()
loss = a.mean()

url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
with Client(url, api_key=os.environ.get("GRADSERVE_API_KEY"), timeout=30) as c:
    r = c.evaluate(loss, a, grad_of=loss, wrt=[w, b], dtype="float32")

print("loss =", r[loss].tolist())
print("a =", r[a].tolist())
print("grad w =", r.grad(w).tolist())
print("grad b =", r.grad(b).tolist())
