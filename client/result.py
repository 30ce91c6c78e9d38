"""What an evaluation returns: values and derivatives as NumPy arrays, by node or id; and
what POST /v1/shapes answers."""

from __future__ import annotations

import numpy as np

from . import codec

# The derivative members of a response (PROTOCOL.md §8), present only when asked.
DERIVATIVES = ("jvp", "hvp", "jacobians")


def _key(node) -> str:
    return node if isinstance(node, str) else node.id


class ByNode(dict):
    """A dict by id that also takes the Node: `r.jvp[y]` and `r.jvp["y"]` alike."""

    def __getitem__(self, node):
        return super().__getitem__(_key(node))

    def __contains__(self, node) -> bool:
        return super().__contains__(_key(node))

    def get(self, node, default=None):
        return super().get(_key(node), default)


class Result:
    """`r[node]` is a value, `r.grad(node)` a gradient (NumPy arrays of the request's dtype);
    `r.jvp[y]`, `r.hvp[w]` and `r.jacobians[y][x]` the derivatives of PROTOCOL.md §8 (empty
    when not asked); `r.warnings` and `r.stats` as the server wrote them; `r.body` the whole
    response body."""

    def __init__(self, outputs: dict[str, np.ndarray], gradients: dict[str, np.ndarray],
                 warnings: list[dict], stats: dict, *, jvp=None, hvp=None, jacobians=None,
                 body: dict | None = None, dtype: str = "float32", encoding: str = "nested"):
        self.outputs, self.gradients = ByNode(outputs), ByNode(gradients)
        self.jvp, self.hvp = ByNode(jvp or {}), ByNode(hvp or {})
        self.jacobians = ByNode({y: ByNode(row) for y, row in (jacobians or {}).items()})
        # which members the request asked for: only they are written in the body
        self._asked = [m for m, v in zip(DERIVATIVES, (jvp, hvp, jacobians), strict=True)
                       if v is not None]
        self.warnings, self.stats = warnings, stats
        self._body, self._dtype, self._encoding = body, dtype, encoding

    @classmethod
    def from_body(cls, body: dict) -> Result:
        """A response body of POST /v1/evaluate, its tensors decoded."""
        def decoded(tensors):
            return {k: codec.decode(t) for k, t in tensors.items()}

        extra = {m: decoded(body[m]) for m in ("jvp", "hvp") if m in body}
        if "jacobians" in body:
            extra["jacobians"] = {y: decoded(row) for y, row in body["jacobians"].items()}
        return cls(decoded(body["outputs"]), decoded(body["gradients"]), body["warnings"],
                   body["stats"], body=body, **extra)

    @property
    def body(self) -> dict:
        """The response body; for a local evaluation, written as the server would."""
        if self._body is None:
            def encode(arrays):
                return {k: codec.encode(v, self._dtype, self._encoding) for k, v in arrays.items()}
            body = {"outputs": encode(self.outputs), "gradients": encode(self.gradients)}
            for member in self._asked:
                arrays = getattr(self, member)
                body[member] = ({y: encode(row) for y, row in arrays.items()}
                                if member == "jacobians" else encode(arrays))
            self._body = {**body, "warnings": self.warnings, "stats": self.stats}
        return self._body

    def __getitem__(self, node) -> np.ndarray:
        key = _key(node)
        if key not in self.outputs:
            raise KeyError(f"{key!r} is not among the outputs {sorted(self.outputs)}")
        return self.outputs[key]

    def __contains__(self, node) -> bool:
        return _key(node) in self.outputs

    def grad(self, node) -> np.ndarray:
        """d(grad_of)/d(node), of node's shape (with batch seeds, (k, *node's shape))."""
        key = _key(node)
        if key not in self.gradients:
            raise KeyError(f"no gradient of {key!r}: the request's wrt was "
                           f"{sorted(self.gradients)}")
        return self.gradients[key]

    def __repr__(self) -> str:
        asked = "".join(f", {m}={sorted(getattr(self, m))}" for m in self._asked)
        return (f"Result(outputs={sorted(self.outputs)}, gradients={sorted(self.gradients)}"
                f"{asked}, warnings={len(self.warnings)})")


class Shapes:
    """What POST /v1/shapes answers (PROTOCOL.md §9): the shape of everything an evaluation
    would return, and its cost, with nothing computed.

    `s.outputs[y]`, `s.gradients[w]`, `s.jvp[y]`, `s.hvp[w]` and `s.jacobians[y][x]` are
    shape tuples; `s.nodes[h]` is `{"op", "shape", "dtype"}` for every node; `s.cost` is
    `{"flops", "peak_bytes", "response_bytes"}`; `s.body` the response body."""

    def __init__(self, body: dict):
        def shapes(tensors):
            return ByNode({k: tuple(t["shape"]) for k, t in tensors.items()})

        self.body = body
        self.nodes = ByNode(body["nodes"])
        self.outputs, self.gradients = shapes(body["outputs"]), shapes(body["gradients"])
        self.jvp, self.hvp = shapes(body["jvp"]), shapes(body["hvp"])
        self.jacobians = ByNode({y: shapes(row) for y, row in body["jacobians"].items()})
        self.cost = body["cost"]

    def __repr__(self) -> str:
        return f"Shapes(outputs={dict(self.outputs)}, cost={self.cost})"
