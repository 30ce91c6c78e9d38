"""gradserve's Python SDK: build a graph like the seed's tensors, get NumPy arrays back.

    import numpy as np
    from client import Client, Graph

    g = Graph()
    x = g.input("x", np.array([[1.0, 2.0], [3.0, 4.0]]))
    w = g.parameter("w", np.array([[0.5], [-0.25]]))
    b = g.parameter("b", np.array([1.0]))
    a = (x @ w + b).sigmoid()
    loss = a.mean()
    with Client("http://127.0.0.1:8000") as c:       # or Client.local(): no server
        r = c.evaluate(loss, a, grad_of=loss, wrt=[w, b])
    r[loss], r[a], r.grad(w), r.grad(b)

Depends on requests and NumPy (and the engine package `autograd`, NumPy only,
for the op registry and the local backend); never on the service.
"""

from . import ops
from .errors import (
    BadRequestError,
    ConnectError,
    DeadlineError,
    GradserveError,
    NetworkError,
    OverloadedError,
    ReadTimeoutError,
    ServerError,
    TooLargeError,
    UnauthorizedError,
    ValidationError,
)
from .graph import Graph, Node
from .local import LocalClient
from .model import Model
from .result import Result, Shapes
from .session import BaseClient, Client

__all__ = [
    "BadRequestError", "BaseClient", "Client", "ConnectError", "DeadlineError", "Graph",
    "GradserveError", "LocalClient", "Model", "NetworkError", "Node", "OverloadedError",
    "ReadTimeoutError", "Result", "ServerError", "Shapes", "TooLargeError", "UnauthorizedError",
    "ValidationError", "ops",
]
