"""A model stored with the server (PROTOCOL.md §10), called with NumPy arrays.

    with Client("http://127.0.0.1:8000") as c:        # or Client.local(models_dir="models")
        m = c.model("banana")
        m.inputs                      # {"theta": (2,)}
        m({"theta": x})               # {"logp": array(...)}
        m.grad(x)                     # {"theta": d logp / d theta}; one input: the array alone
        m.jvp(x, tangents=v)          # {"logp": J v}
        m.hvp(x, tangents=v)          # {"theta": H v}
        m.jacobian(x)                 # {"logp": {"theta": J}}

Inputs are a dict by input name, or for a one-input model the array alone.
Only the inputs travel: the graph stays on the server.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import codec
from .errors import GradserveError
from .result import Result


class Model:
    """One model: `name`, `description`, `dtype`, `inputs` and `outputs` ({name: shape}, in
    declared order), and calls that return NumPy arrays."""

    def __init__(self, client, info: dict):
        self.client = client
        self.name, self.description, self.dtype = info["name"], info["description"], info["dtype"]
        self.inputs = {i["name"]: tuple(i["shape"]) for i in info["inputs"]}
        self.outputs = {o["name"]: tuple(o["shape"]) for o in info["outputs"]}

    def __repr__(self) -> str:
        return f"Model({self.name!r}, inputs={self.inputs}, outputs={self.outputs})"

    # -- the request ---------------------------------------------------------------------------

    def _tensors(self, arrays, what: str) -> dict:
        if not isinstance(arrays, Mapping):
            if len(self.inputs) != 1:
                raise TypeError(f"model {self.name!r} has inputs {list(self.inputs)}: give "
                                f"{what} as a dict by name")
            arrays = {next(iter(self.inputs)): arrays}
        return {k: codec.encode(np.asarray(v, self.dtype), self.dtype)
                for k, v in arrays.items()}

    def _of(self, of) -> str:
        if of is not None:
            return of
        if len(self.outputs) != 1:
            raise TypeError(f"model {self.name!r} has outputs {list(self.outputs)}: say which "
                            f"with of=")
        return next(iter(self.outputs))

    def _seed(self, seed) -> dict | None:
        return None if seed is None else codec.encode(np.asarray(seed), self.dtype)

    def request(self, inputs, **members) -> dict:
        """POST /v1/models/NAME/evaluate with these inputs and request members (§1, §8)."""
        body = {"inputs": self._tensors(inputs, "inputs"), **members}
        return self.client.request("POST", f"/v1/models/{self.name}/evaluate", json=body)

    # -- calls ---------------------------------------------------------------------------------

    def evaluate(self, inputs, *, grad_of: str | None = None, wrt=None, seed=None,
                 outputs=None, encoding: str | None = None) -> Result:
        """Values of the model's outputs (or `outputs`) and, with `grad_of`, gradients."""
        members = {}
        if outputs is not None:
            members["outputs"] = list(outputs)
        if grad_of is not None:
            members["grad"] = {"of": grad_of, "wrt": wrt, "seed": self._seed(seed)}
            members["grad"] = {k: v for k, v in members["grad"].items() if v is not None}
        if encoding is not None:
            members["encoding"] = encoding
        return Result.from_body(self.request(inputs, **members))

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        """The outputs, by name."""
        return self.evaluate(inputs).outputs

    def grad(self, inputs, *, of: str | None = None, seed=None, wrt=None):
        """d(seed · of)/d(each input, or each of `wrt`): a dict by name, or for a one-input
        model the array alone. `of` defaults to the only output."""
        r = self.evaluate(inputs, grad_of=self._of(of), wrt=wrt, seed=seed, outputs=[])
        return _one(r.gradients) if wrt is None and len(self.inputs) == 1 else r.gradients

    def jvp(self, inputs, tangents, *, of=None) -> dict[str, np.ndarray]:
        """J·tangents for each output (or each of `of`), by output name (PROTOCOL.md §8)."""
        spec = {"tangents": self._tensors(tangents, "tangents"), "of": list(of or self.outputs)}
        return _arrays(_member(self.request(inputs, outputs=[], jvp=spec), "jvp"))

    def hvp(self, inputs, tangents, *, of: str | None = None, seed=None, wrt=None):
        """The Hessian of seed · of times the tangents, by input (PROTOCOL.md §8); for a
        one-input model the array alone."""
        spec = {"of": self._of(of), "tangents": self._tensors(tangents, "tangents")}
        if seed is not None:
            spec["seed"] = self._seed(seed)
        if wrt is not None:
            spec["wrt"] = list(wrt)
        found = _arrays(_member(self.request(inputs, outputs=[], hvp=spec), "hvp"))
        return _one(found) if wrt is None and len(self.inputs) == 1 else found

    def jacobian(self, inputs, *, of=None, wrt=None) -> dict[str, dict[str, np.ndarray]]:
        """{output: {input: J}}, J of shape output shape + input shape (PROTOCOL.md §8)."""
        spec = {"of": list(of or self.outputs), "wrt": list(wrt or self.inputs)}
        found = _member(self.request(inputs, outputs=[], jacobian=spec), "jacobians")
        return {y: _arrays(by_x) for y, by_x in found.items()}


def _member(body: dict, key: str) -> dict:
    if key not in body:
        raise GradserveError({"type": "about:blank", "title": "Not supported", "status": None,
                              "code": "unsupported", "detail": f"the answer has no {key!r}: "
                              "the server (or local backend) predates PROTOCOL.md §8"})
    return body[key]


def _arrays(tensors: dict) -> dict[str, np.ndarray]:
    return {k: codec.decode(t) for k, t in tensors.items()}


def _one(found: dict):
    (value,) = found.values()
    return value
