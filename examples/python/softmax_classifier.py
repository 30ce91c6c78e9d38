"""A softmax classifier trained by gradient descent through gradserve, with cross_entropy.

    GRADSERVE_URL=http://127.0.0.1:8000 python examples/python/softmax_classifier.py

Three clusters of points in the plane, one per class; each step sends the graph
with the current weights and gets the loss and its gradients back. Prints
`loss_start = ...`, `loss_end = ...`, `accuracy = ...`, and the trained `W` and `b`.
"""

import os

import numpy as np

from client import Client, Graph, ops

STEPS, LEARNING_RATE = 40, 0.5

# the data: 3 classes around (2, 0), (-1, 2) and (-1, -2), 20 points each, targets one-hot
rng = np.random.default_rng(0)
centres = np.array([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
labels = np.repeat(np.arange(3), 20)
points = centres[labels] + rng.normal(scale=0.7, size=(60, 2))
targets = np.eye(3)[labels]


def step(client: Client, W: np.ndarray, b: np.ndarray):  # noqa: N803 (the math's names)
    """The loss, its gradients and the logits for one set of weights."""
    g = Graph()
    x, t = g.input("x", points), g.input("t", targets)
    w_, b_ = g.parameter("W", W), g.parameter("b", b)
    logits = x @ w_ + b_
    loss = ops.cross_entropy(logits, t, axis=-1)
    r = client.evaluate(loss, logits, grad_of=loss, dtype="float64")
    return float(r[loss]), r.grad(w_), r.grad(b_), r[logits]


url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
W, b = np.zeros((2, 3)), np.zeros(3)
with Client(url, api_key=os.environ.get("GRADSERVE_API_KEY"), timeout=30) as client:
    for i in range(STEPS + 1):
        loss, dW, db, logits = step(client, W, b)
        if i == 0:
            print("loss_start =", loss)
        if i < STEPS:
            W, b = W - LEARNING_RATE * dW, b - LEARNING_RATE * db

print("loss_end =", loss)
print("accuracy =", float(np.mean(logits.argmax(axis=1) == labels)))
print("W =", W.tolist())
print("b =", b.tolist())
