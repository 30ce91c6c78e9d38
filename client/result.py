"""What an evaluation returns: values and gradients as NumPy arrays, by node or id."""

from __future__ import annotations

import numpy as np

from . import codec


def _key(node) -> str:
    return node if isinstance(node, str) else node.id


class Result:
    """`r[node]` is a value, `r.grad(node)` a gradient (NumPy arrays of the request's dtype);
    `r.warnings` and `r.stats` as the server wrote them; `r.body` the whole response body."""

    def __init__(self, outputs: dict[str, np.ndarray], gradients: dict[str, np.ndarray],
                 warnings: list[dict], stats: dict, *, body: dict | None = None,
                 dtype: str = "float32", encoding: str = "nested"):
        self.outputs, self.gradients = outputs, gradients
        self.warnings, self.stats = warnings, stats
        self._body, self._dtype, self._encoding = body, dtype, encoding

    @classmethod
    def from_body(cls, body: dict) -> Result:
        """A response body of POST /v1/evaluate, its tensors decoded."""
        return cls({k: codec.decode(t) for k, t in body["outputs"].items()},
                   {k: codec.decode(t) for k, t in body["gradients"].items()},
                   body["warnings"], body["stats"], body=body)

    @property
    def body(self) -> dict:
        """The response body; for a local evaluation, written as the server would."""
        if self._body is None:
            def encode(arrays):
                return {k: codec.encode(v, self._dtype, self._encoding) for k, v in arrays.items()}
            self._body = {"outputs": encode(self.outputs), "gradients": encode(self.gradients),
                          "warnings": self.warnings, "stats": self.stats}
        return self._body

    def __getitem__(self, node) -> np.ndarray:
        key = _key(node)
        if key not in self.outputs:
            raise KeyError(f"{key!r} is not among the outputs {sorted(self.outputs)}")
        return self.outputs[key]

    def __contains__(self, node) -> bool:
        return _key(node) in self.outputs

    def grad(self, node) -> np.ndarray:
        """d(grad_of)/d(node), of node's shape."""
        key = _key(node)
        if key not in self.gradients:
            raise KeyError(f"no gradient of {key!r}: the request's wrt was "
                           f"{sorted(self.gradients)}")
        return self.gradients[key]

    def __repr__(self) -> str:
        return (f"Result(outputs={sorted(self.outputs)}, gradients={sorted(self.gradients)}, "
                f"warnings={len(self.warnings)})")
