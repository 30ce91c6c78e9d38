"""The engine's errors: each carries a stable `code` and where it happened.

`path` locates the fault inside the graph description as a tuple of keys
(``("nodes", 3, "args", 1)``); the service turns it into an RFC 6901 pointer.
`column` (1-based, in characters) places it inside an expression (``("expr", "loss")``).
Callers switch on `code`, never on the message.
"""

from __future__ import annotations


class AutogradError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "validation_error"

    def __init__(self, detail: str, *, path: tuple = (), node: str | None = None,
                 column: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.path = tuple(path)
        self.node = node
        self.column = column

    def within(self, *prefix, node: str | None = None, context: str | None = None) -> AutogradError:
        """Place an error raised by a rule inside the graph: prefix its path and message."""
        self.path = tuple(prefix) + self.path
        if node is not None and self.node is None:
            self.node = node
        if context:
            self.detail = f"{context}: {self.detail}"
            self.args = (self.detail,)
        return self

    def __str__(self) -> str:
        return self.detail


class UnknownOp(AutogradError):
    code = "unknown_op"


class UnknownId(AutogradError):
    code = "unknown_id"


class DuplicateId(AutogradError):
    code = "duplicate_id"


class CycleError(AutogradError):
    code = "cycle"

    def __init__(self, detail: str, *, ids: list[str], path: tuple = ()):
        super().__init__(detail, path=path, node=ids[0] if ids else None)
        self.ids = ids


class ArityError(AutogradError):
    code = "wrong_arity"


class BadAttribute(AutogradError):
    code = "bad_attribute"


class ShapeMismatch(AutogradError):
    code = "shape_mismatch"


class DtypeMismatch(AutogradError):
    code = "dtype_mismatch"


class BadTensor(AutogradError):
    code = "bad_tensor"


class SeedRequired(AutogradError):
    code = "seed_required"


class BadExpression(AutogradError):
    """An `expr` that does not parse, or uses something outside the expression language."""

    code = "bad_expression"


class LimitExceeded(AutogradError):
    """A size limit would be passed; decided from shapes before anything is allocated."""

    def __init__(self, detail: str, *, code: str = "graph_too_large", path: tuple = (),
                 node: str | None = None):
        super().__init__(detail, path=path, node=node)
        self.code = code


class DeadlineExceeded(AutogradError):
    code = "deadline_exceeded"
