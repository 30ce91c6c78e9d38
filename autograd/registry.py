"""The op registry: one entry per op, everything else generated from it.

An `Op` holds the forward function, the gradient rule in the seed's signature
``(tensor, grad) -> tuple of parent grads``, the shape rule, the attributes
with their JSON Schema, which args may be number literals, what the rule
reads back from the forward pass, and a one-line formula for each direction.
The Tensor methods, the service's `/v1/ops`, the client's builder and the
parametrised tests all read `OPS`.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .errors import ArityError, BadAttribute

DTYPES = ("float32", "float64")
REQUIRED = object()


# ---- attribute kinds: how a value is checked, and its JSON Schema -----------------------

def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not _is_bool(v)


def is_number(v) -> bool:
    """A number literal that may stand in an op's args (never a bool)."""
    return isinstance(v, numbers.Real) and not _is_bool(v)


def _int(v):
    if not _is_int(v):
        raise TypeError("an integer")
    return int(v)


def _number(v):
    if not isinstance(v, numbers.Real) or _is_bool(v):
        raise TypeError("a number")
    if not math.isfinite(v):
        raise TypeError("a finite number")
    return int(v) if _is_int(v) else float(v)


def _bool(v):
    if not _is_bool(v):
        raise TypeError("true or false")
    return bool(v)


def _ints(v):
    if not isinstance(v, (list, tuple)) or not all(_is_int(a) for a in v):
        raise TypeError("a list of integers")
    return tuple(int(a) for a in v)


def _axes(v):
    return None if v is None else _int(v) if _is_int(v) else _ints(v)


def _perm(v):
    return None if v is None else _ints(v)


def _bound(v):
    return None if v is None else _number(v)


def _text(v):
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _index(v):
    """getitem's index (PROTOCOL.md §2.1) in its JSON form: ints, {"start", "stop", "step"},
    null (a new axis) and "..."; Python's own slice and Ellipsis are taken too (x[1:, None])."""
    if not isinstance(v, (list, tuple)):
        raise TypeError("a list")
    out = []
    for k, e in enumerate(v):
        if e is None or _is_int(e):
            out.append(e if e is None else int(e))
        elif e is Ellipsis or e == "...":
            out.append("...")
        elif isinstance(e, (slice, dict)):
            out.append(_slice(e, k))
        else:
            raise BadAttribute(f"index entry {k} must be an integer, a slice object "
                               f'{{"start", "stop", "step"}}, null or "..."', path=(k,))
    if out.count("...") > 1:
        raise BadAttribute('an index may hold "..." once', path=())
    return tuple(out)


def _slice(e, k: int) -> dict:
    parts = (e.start, e.stop, e.step) if isinstance(e, slice) else (
        e.get("start"), e.get("stop"), e.get("step"))
    if isinstance(e, dict) and not e.keys() <= {"start", "stop", "step"}:
        extra = sorted(e.keys() - {"start", "stop", "step"})[0]
        raise BadAttribute(f"a slice has only start, stop and step, not {extra!r}",
                           path=(k, extra))
    for name, p in zip(("start", "stop", "step"), parts, strict=True):
        if not (p is None or _is_int(p)):
            raise BadAttribute(f"a slice's {name} must be an integer or null", path=(k, name))
    if parts[2] == 0:
        raise BadAttribute("a slice's step must not be zero", path=(k, "step"))
    return dict(zip(("start", "stop", "step"), (None if p is None else int(p) for p in parts),
                    strict=True))


def _any(v):
    return v


_INT = {"type": "integer"}
_INTS = {"type": "array", "items": _INT, "maxItems": 64}
KINDS: dict[str, tuple[Callable[[Any], Any], dict]] = {
    "number": (_number, {"type": "number"}),
    "int": (_int, _INT),
    "bool": (_bool, {"type": "boolean"}),
    "shape": (_ints, _INTS),
    "axes": (_axes, {"anyOf": [_INT, _INTS, {"type": "null"}]}),
    "perm": (_perm, {"anyOf": [_INTS, {"type": "null"}]}),
    "bound": (_bound, {"type": ["number", "null"]}),
    "ints": (_ints, {"type": "array", "items": _INT}),
    "text": (_text, {"type": "string", "maxLength": 256}),
    "index": (_index, {"type": "array", "maxItems": 64, "items": {"anyOf": [
        _INT, {"type": "null"}, {"const": "..."},
        {"type": "object", "additionalProperties": False, "properties": {
            k: {"type": ["integer", "null"]} for k in ("start", "stop", "step")}}]}}),
    "any": (_any, {}),  # internal ops only: a value a rule made, never a client's
}
_EXPECTS = {"number": "a finite number", "int": "an integer", "bool": "true or false",
            "shape": "a list of integers", "axes": "an integer, a list of integers or null",
            "perm": "a list of integers or null", "bound": "a finite number or null",
            "ints": "a list of integers", "text": "a string", "index": "a list",
            "any": "a value"}


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def schema(self) -> dict:
        schema = dict(KINDS[self.kind][1], description=self.doc)
        if not self.required:
            d = self.default
            schema["default"] = list(d) if isinstance(d, tuple) else d
        return schema


# ---- ops --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    forward: Callable                # (*arrays, **attrs) -> array
    grad: Callable                   # (tensor, g) -> tuple aligned with the args; None = not needed
    shape: Callable                  # (*shapes, **attrs) -> shape; raises ShapeMismatch
    doc: str                         # forward formula, one line
    grad_doc: str                    # gradient formula, one line
    attrs: tuple[Attr, ...] = ()
    numbers: tuple[int, ...] = ()    # arg positions that may be number literals
    saves: str = ""                  # what the rule reads: "x" the args, "y" the output
    bind: Callable | None = None     # (shapes, attrs) -> attrs normalised against the shapes
    flops: Callable | None = None    # (shapes, out_shape, attrs) -> float; None: out's elements
    operator: str | None = None      # Python operator that builds it, e.g. "+"
    linear: str = ""                 # "linear" in all args jointly, or "bilinear" (x @ y, x * y):
    #                                  forward mode may then apply the forward to the tangents
    symmetric: bool = False          # one arg, and its Jacobian is symmetric (elementwise ops,
    #                                  softmax): forward mode may run the rule on the tangent
    batch: Callable | str | None = "elementwise"  # how it runs with a leading batch axis (vmap):
    #   "elementwise": as it is, operands padded to the output's rank (NumPy broadcasting);
    #   a function (attrs, in_shapes, out_shape, B) -> the attrs for batched operands, or a list
    #   of (op, args, attrs) steps whose args are operand positions or ("step", k); None: none
    dtypes: tuple[str, ...] = DTYPES
    variadic: bool = False           # arity is then the least number of args ("1 or more")
    internal: bool = False           # a rule's helper (a transpose): not in OPS, not public
    attr_names: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "attr_names", frozenset(a.name for a in self.attrs))

    def check_attrs(self, given: dict | None) -> dict:
        """Strictly typed attrs with defaults filled in; BadAttribute names the attribute."""
        if not given:
            if not self.attrs:
                return {}
            given = {}
        elif not isinstance(given, dict):
            raise BadAttribute(f"{self.name}'s attrs must be an object, not "
                               f"{type(given).__name__}", path=())
        for name in given:
            if name not in self.attr_names:
                allowed = ", ".join(sorted(self.attr_names)) or "none"
                raise BadAttribute(f"{self.name} has no attribute {name!r} (allowed: {allowed})",
                                   path=(name,))
        out = {}
        for a in self.attrs:
            if a.name not in given:
                if a.required:
                    raise BadAttribute(f"{self.name} needs attribute {a.name!r}", path=())
                out[a.name] = a.default
                continue
            try:
                out[a.name] = KINDS[a.kind][0](given[a.name])
            except TypeError:
                raise BadAttribute(f"attribute {a.name!r} must be {_EXPECTS[a.kind]}",
                                   path=(a.name,)) from None
            except BadAttribute as e:  # a kind that names the entry within the attribute
                raise BadAttribute(f"attribute {a.name!r}: {e.detail}",
                                   path=(a.name, *e.path)) from None
        return out

    @property
    def arity_text(self) -> str:
        return f"{self.arity} or more" if self.variadic else str(self.arity)

    def check_arity(self, n: int) -> None:
        if n < self.arity if self.variadic else n != self.arity:
            raise ArityError(f"{self.name} takes {self.arity_text} argument(s), got {n}")

    def infer(self, shapes: Sequence[tuple], attrs: dict) -> tuple[dict, tuple]:
        """Checked attrs bound against the operands' shapes, and the output's shape; raises
        BadAttribute or ShapeMismatch. Eager ops, the planner and the SDK all ask this."""
        if self.bind:
            attrs = {**attrs, **self.bind(*shapes, **attrs)}
        return attrs, tuple(self.shape(*shapes, **attrs))

    def bind_forward(self, attrs: dict) -> Callable:
        """The forward function with its attributes bound. Calling a NumPy ufunc with even an
        empty **kwargs takes its slow path (~0.7 µs), so attribute-free ops get it bare."""
        return partial(self.forward, **attrs) if attrs else self.forward

    def split_call(self, args: tuple, attrs: dict) -> tuple[tuple, dict]:
        """Call arguments to (operands, attrs): x.sum(0, True) is sum(x, axis=0, keepdims=True).
        A variadic op takes its operands as a list or one by one, after any leading string
        attributes, as NumPy: concat([a, b], 1), concat(a, b, axis=1), einsum("ij->i", a)."""
        if self.variadic:
            texts = 0
            while texts < len(args) and isinstance(args[texts], str):
                texts += 1
            rest = args[texts:]
            if rest and isinstance(rest[0], (list, tuple)):
                operands, rest = tuple(rest[0]), rest[1:]
            else:
                operands, rest = rest, ()
            extra = args[:texts] + rest
        else:
            operands, extra = args[: self.arity], args[self.arity:]
        if len(extra) > len(self.attrs):
            raise TypeError(f"{self.name}() takes {self.arity} operand(s) and attributes "
                            f"{[a.name for a in self.attrs]}, got {len(args)} positional arguments")
        attrs = dict(attrs)
        for a, value in zip(self.attrs, extra, strict=False):
            if a.name in attrs:
                raise TypeError(f"{self.name}() got attribute {a.name!r} twice")
            attrs[a.name] = value
        return operands, attrs

    def describe(self) -> dict:
        """The JSON description served by GET /v1/ops."""
        return {
            "name": self.name,
            "arity": self.arity,
            "variadic": self.variadic,
            "numbers": list(self.numbers),
            "attrs": {a.name: a.schema() for a in self.attrs},
            "required_attrs": [a.name for a in self.attrs if a.required],
            "forward": self.doc,
            "gradient": self.grad_doc,
            "operator": self.operator,
            "dtypes": list(self.dtypes),
        }


OPS: dict[str, Op] = {}
INTERNAL: dict[str, Op] = {}  # ops only rules build: no request, no /v1/ops, no SDK

def suggest(name: str) -> str | None:
    """The registered op a misspelt name most likely meant (`Sigmoid`, `sigmod`), or None."""
    by_lower = {op.lower(): op for op in OPS}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    # 0.7: one letter off in a short name still matches; `frobnicate` is not `concat` (0.63)
    close = difflib.get_close_matches(name.lower(), by_lower, n=1, cutoff=0.7)
    return by_lower[close[0]] if close else None


# Python operators and the dunder methods that build an op with them (Tensor, client builder).
PYTHON_OPERATORS = {
    "+": ("__add__", "__radd__"),
    "-": ("__sub__", "__rsub__"),
    "*": ("__mul__", "__rmul__"),
    "@": ("__matmul__", "__rmatmul__"),
    "/": ("__truediv__", "__rtruediv__"),
    "**": ("__pow__", None),      # x ** number: the exponent is an attribute
    "-x": ("__neg__", None),
    ">": ("__gt__", None),        # 1 < x is x > 1: Python reflects comparisons itself
    "<": ("__lt__", None),
    "[]": ("__getitem__", None),  # x[1:, None, ...]: the index is an attribute
}


def defop(name: str, arity: int, forward, grad, shape, doc: str, grad_doc: str, **kw) -> Op:
    """Register one op. The registry is filled at import and read-only after."""
    if name in OPS or name in INTERNAL:
        raise ValueError(f"op {name!r} defined twice")
    op = Op(name, arity, forward, grad, shape, doc, grad_doc, **kw)
    (INTERNAL if op.internal else OPS)[name] = op
    return op


# ---- what the registry generates: functions, methods and operators -----------------------

def functions(apply: Callable) -> dict[str, Callable]:
    """One function per op, `name(*operands, *attrs, **attrs)`, each calling
    `apply(op, *operands, **attrs)`; with the operand first, also the method."""
    def function_for(op: Op):
        def function(*args, **attrs):
            operands, attrs = op.split_call(args, attrs)
            return apply(op, *operands, **attrs)

        function.__name__ = function.__qualname__ = op.name
        function.__doc__ = f"{op.doc}.  Gradient: {op.grad_doc}."
        return function

    return {name: function_for(op) for name, op in OPS.items()}


def install(cls: type, apply: Callable, number: Callable = is_number) -> dict[str, Callable]:
    """Give `cls` a method per op and the Python operators its ops declare, all building
    through `apply`; `number(v)` says which literals may stand for an operand. Returns the
    functions, for a module to export."""
    made = functions(apply)
    for name, fn in made.items():
        if not hasattr(cls, name):
            setattr(cls, name, fn)

    def operand(op: Op, position: int, v) -> bool:
        return isinstance(v, cls) or (position in op.numbers and number(v))

    for op in OPS.values():
        if op.operator:
            for name, fn in _operators(op, apply, operand).items():
                setattr(cls, name, fn)
    return made


def _operators(op: Op, apply: Callable, operand: Callable) -> dict[str, Callable]:
    forward, reflected = PYTHON_OPERATORS[op.operator]
    if op.operator == "**":
        def power(self, exponent):
            return apply(op, self, exponent=exponent) if is_number(exponent) else NotImplemented
        return {forward: power}
    if op.operator == "[]":
        def index(self, key):
            if isinstance(key, list) or (isinstance(key, tuple) and
                                         any(isinstance(k, (list, tuple)) for k in key)):
                raise TypeError("only basic indexing (ints, slices, None, ...); "
                                "take() picks a list of indices")
            return apply(op, self, index=key if isinstance(key, tuple) else (key,))
        return {forward: index}
    if op.arity == 1:
        return {forward: lambda self: apply(op, self)}

    def fwd(self, other):
        return apply(op, self, other) if operand(op, 1, other) else NotImplemented

    def ref(self, other):
        return apply(op, other, self) if operand(op, 0, other) else NotImplemented

    return {forward: fwd, reflected: ref} if reflected else {forward: fwd}
