"""The expression form (PROTOCOL.md §12): `{"key": "expression"}` to registry nodes.

An expression is parsed by Python's own parser (`ast`, eval mode) and then
walked over a whitelist: numbers, names of ids, `+ - * / @ **` and unary `-`,
calls of registry ops with keyword attributes written as JSON literals,
subscripts when the registry has `getitem`, parentheses. Nothing is ever
evaluated. Each sub-expression becomes a node; the whole expression becomes
the node named by its key.

Generated ids are `KEY:N` (N = 1, 2, ... in the order the sub-expressions are
computed), skipping any id the request already defines, so they never clash
with a client's id and are valid ids a client may name in `outputs` or
`grad.wrt` once it has seen them. A mistake is an AutogradError at
``("expr", KEY)`` with a 1-based `column` counted in characters from the
start of the expression.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence

from .errors import (
    ArityError,
    AutogradError,
    BadAttribute,
    BadExpression,
    LimitExceeded,
    UnknownId,
    UnknownOp,
)
from .registry import OPS, is_number

MAX_CHARS = 10_000  # one expression; a longer one is refused before it is parsed
MAX_ID = 128        # the id pattern's length limit

_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.MatMult: "@", ast.Div: "/",
              ast.Pow: "**"}
_JSON_NAMES = {"true": True, "false": False, "null": None}


class Expanded(list):
    """The nodes of a request with its `expr` expanded: a plain list of node dicts, which
    also knows where each expanded node came from, to point an error at its expression."""

    def __init__(self, nodes: Iterable, given: int):
        super().__init__(nodes)
        self.given = given                               # how many came from `nodes`
        self.origin: dict[str, tuple[str, int]] = {}     # node id -> (expr key, column)

    @property
    def generated(self) -> list[dict]:
        """The nodes `expr` expanded to (keys' nodes and their sub-expressions')."""
        return self[self.given:]

    def locate(self, e: AutogradError) -> AutogradError:
        """An engine error about an expanded node, moved to ``("expr", KEY)`` and its column;
        any other error unchanged."""
        p = e.path
        if len(p) >= 2 and p[0] == "nodes" and isinstance(p[1], int) and p[1] >= self.given \
                and p[1] < len(self):
            key, column = self.origin[self[p[1]]["id"]]
            e.path, e.column = ("expr", key), column
            e.detail = f"expr {key!r}, column {column}: {e.detail}"
            e.args = (e.detail,)
        return e


def expand(nodes: Sequence[Mapping], expr: Mapping[str, str] | None, known_ids: Iterable[str],
           *, max_nodes: int | None = None) -> Expanded:
    """`nodes` followed by the nodes every `expr` key expands to.

    `known_ids` are the other ids expressions may name (inputs; a model's constants); the
    ids of `nodes` and the keys of `expr` are added here. `max_nodes` bounds the total, so
    a flood of expressions is refused before it is all parsed.
    """
    out = Expanded(nodes, len(nodes))
    if not expr:
        return out
    if max_nodes is not None and len(nodes) + len(expr) > max_nodes:
        raise LimitExceeded(f"nodes and expr define {len(nodes) + len(expr):,} nodes; the "
                            f"limit is {max_nodes:,}", code="graph_too_large", path=("expr",))
    defined = set(known_ids)
    defined.update(n.get("id") for n in nodes if hasattr(n, "get"))
    names = defined | set(expr)
    taken = set(names)          # ids generated so far join it
    operators = _operator_ops()
    for key, text in expr.items():
        if key in defined:
            raise BadExpression(f"expr key {key!r} is already an input or node id",
                                path=("expr", key), node=key)
        _Expression(key, text, names, taken, operators).nodes_into(out)
        if max_nodes is not None and len(out) > max_nodes:
            raise LimitExceeded(f"expr expands to more than {max_nodes:,} nodes (the limit), "
                                f"at key {key!r}", code="graph_too_large", path=("expr", key))
    return out


def _operator_ops() -> dict[str, str]:
    """Python operator -> op name, read from the registry as it is now: `/` is `div` only
    where the server has one, `x[...]` likewise `getitem`."""
    ops = {op.operator: op.name for op in OPS.values() if op.operator}
    if "/" not in ops and "div" in OPS:
        ops["/"] = "div"
    if "getitem" in OPS:
        ops["[]"] = "getitem"
    return ops


class _Expression:
    """One key's expression, walked into nodes. Sub-expressions are visited with an explicit
    stack: the parser accepts nesting deeper than Python's recursion limit allows a walk."""

    def __init__(self, key: str, text, names: set, taken: set, operators: dict):
        self.key, self.text, self.names, self.taken = key, text, names, taken
        self.operators = operators
        self.count = 0
        if not isinstance(text, str):
            raise BadExpression(f"expr {key!r} must be a string", path=("expr", key))
        if len(text) > MAX_CHARS:
            raise LimitExceeded(f"expr {key!r} has {len(text):,} characters; the limit is "
                                f"{MAX_CHARS:,}", code="expression_too_large",
                                path=("expr", key))
        self.lines = text.split("\n")  # ast's line numbers count "\n" only (no \r, no \f)

    # -- errors and positions ------------------------------------------------------------

    def error(self, cls, message: str, column: int, **kw) -> AutogradError:
        return cls(f"expr {self.key!r}, column {column}: {message}", path=("expr", self.key),
                   node=self.key, column=column, **kw)

    def column(self, node: ast.AST) -> int:
        """1-based character position in the whole expression (ast counts UTF-8 bytes)."""
        return self._position(node.lineno, node.col_offset) + 1

    def after(self, node: ast.AST) -> int:
        """The column of what follows `node`, past spaces and closing parentheses: the
        operator of a binary expression, the `[` of a subscript."""
        i, text = self._position(node.end_lineno, node.end_col_offset), self.text
        while i < len(text) - 1 and text[i] in " \t\r\n\\)":
            i += 1
        return i + 1

    def _position(self, lineno: int, byte_offset: int) -> int:
        line = self.lines[lineno - 1].encode()[:byte_offset].decode(errors="ignore")
        return self._line_start(lineno) + len(line)

    def _line_start(self, lineno: int) -> int:
        return sum(len(x) + 1 for x in self.lines[: lineno - 1])

    # -- parsing -------------------------------------------------------------------------

    def parse(self) -> ast.expr:
        try:
            return ast.parse(self.text, mode="eval").body
        except SyntaxError as e:
            column = self._syntax_column(e)
            raise self.error(BadExpression, e.msg, column) from None
        except (RecursionError, MemoryError):  # CPython's parser and ast builder on deep input
            raise self.error(BadExpression, "nested too deeply to parse; split it into "
                             "several keys", 1) from None
        except ValueError as e:  # e.g. a lone surrogate
            raise self.error(BadExpression, f"not parseable text ({type(e).__name__})",
                             1) from None

    def _syntax_column(self, e: SyntaxError) -> int:
        if not e.lineno or not e.offset:
            return 1
        return self._line_start(e.lineno) + max(e.offset, 1)  # offset: 1-based characters

    def nodes_into(self, out: Expanded) -> None:
        root = self.parse()
        if isinstance(root, (ast.Name, ast.Constant)) or _negated_number(root):
            what = "a name" if isinstance(root, ast.Name) else "a number"
            raise self.error(BadExpression, f"the expression is only {what}; it must apply at "
                             "least one op", self.column(root))
        # post-order without recursion: (node, children visited?)
        stack, value = [(root, False)], {}
        while stack:
            node, ready = stack.pop()
            if ready:
                value[node] = self.build(node, value, out, node is root)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(self.operands(node)))

    def operands(self, node: ast.AST) -> list[ast.expr]:
        """The sub-expressions whose values `node` needs; refuses what is not in the language."""
        if isinstance(node, (ast.Name, ast.Constant)):
            return []
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return [node.left] if isinstance(node.op, ast.Pow) else [node.left, node.right]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return [node.operand]
        if isinstance(node, ast.Call):
            self.callee(node)  # before its arguments: foo(...) is refused for foo
            return list(node.args)
        if isinstance(node, ast.Subscript):
            return [node.value]
        raise self.error(BadExpression, _refusal(node), self.column(node))

    # -- one node ------------------------------------------------------------------------

    def build(self, node: ast.AST, value: dict, out: Expanded, root: bool):
        """The id or number that `node` stands for; ops append a node to `out`."""
        col = self.column(node)
        if isinstance(node, ast.Name):
            return self.name(node, col)
        if isinstance(node, ast.Constant):
            return self.number(node.value, col)
        if isinstance(node, ast.UnaryOp):
            x = value[node.operand]
            return -x if is_number(x) else self.node(out, "neg", [x], {}, col, root)
        if isinstance(node, ast.BinOp):
            return self.binary(node, value, out, col, root)
        if isinstance(node, ast.Subscript):
            return self.subscript(node, value, out, col, root)
        return self.call(node, value, out, col, root)

    def name(self, node: ast.Name, col: int) -> str:
        if node.id in self.names:
            return node.id
        if node.id in OPS:
            raise self.error(BadExpression, f"{node.id!r} is an op: call it, "
                             f"{node.id}(...)", col)
        if node.id in _JSON_NAMES:
            raise self.error(BadExpression, f"{node.id} is not a tensor", col)
        raise self.error(UnknownId, f"{node.id!r} is neither an input, a node nor an expr key",
                         col)

    def number(self, v, col: int):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(BadExpression, f"{v!r} is not a tensor or a number", col)
        try:
            finite = math.isfinite(float(v))
        except OverflowError:
            finite = False
        if not finite:
            raise self.error(BadExpression, "a number must be finite (and fit a float64)", col)
        return v

    def binary(self, node: ast.BinOp, value: dict, out: Expanded, col: int, root: bool):
        symbol = _OPERATORS[type(node.op)]
        name = self.operators.get(symbol)
        col = self.after(node.left)  # the operator's own column
        if name is None:
            raise self.error(BadExpression, f"{symbol!r} is not available on this server (no "
                             f"{'div' if symbol == '/' else symbol} op in /v1/ops)", col)
        x = value[node.left]
        if symbol == "**":
            exponent = _literal_number(node.right)
            if exponent is None:
                raise self.error(BadExpression, "the exponent of ** must be a number, "
                                 "optionally negated", self.column(node.right))
            if is_number(x):
                raise self.error(BadExpression, "the base of ** must be a tensor", col)
            return self.node(out, name, [x], {"exponent": self.number(exponent, col)}, col,
                             root)
        y = value[node.right]
        if is_number(x) and is_number(y):
            raise self.error(BadExpression, f"{x!r} {symbol} {y!r}: one side must be a tensor; "
                             "write the number itself", self.column(node))
        return self.node(out, name, [x, y], {}, col, root)

    def subscript(self, node: ast.Subscript, value: dict, out: Expanded, col: int, root: bool):
        col = self.after(node.value)
        name = self.operators.get("[]")
        if name is None:
            raise self.error(BadExpression, "indexing is not available on this server (no "
                             "getitem op in /v1/ops)", col)
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index = [self.index_entry(p) for p in parts]
        return self.node(out, name, [value[node.value]], {"index": index}, col, root)

    def index_entry(self, p: ast.expr):
        if isinstance(p, ast.Slice):
            entry = {}
            for part in ("lower", "upper", "step"):
                bound = getattr(p, part)
                if bound is not None:
                    entry[{"lower": "start", "upper": "stop"}.get(part, part)] = \
                        self.integer(bound)
            return entry
        if isinstance(p, ast.Constant) and p.value is None:
            return None
        if isinstance(p, ast.Constant) and p.value is Ellipsis:
            return "..."
        return self.integer(p)

    def integer(self, p: ast.expr) -> int:
        v = _literal_number(p)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error(BadExpression, "an index is an integer, a slice of integers, "
                             "None or ...", self.column(p))
        return v

    def callee(self, node: ast.Call):
        f = node.func
        if not isinstance(f, ast.Name):
            raise self.error(BadExpression, "only ops are called, by name: " + _refusal(f),
                             self.column(f))
        op = OPS.get(f.id)
        if op is None:
            raise self.error(UnknownOp, f"unknown op {f.id!r}; GET /v1/ops lists them",
                             self.column(f))
        return op

    def call(self, node: ast.Call, value: dict, out: Expanded, col: int, root: bool):
        op = self.callee(node)
        args = []
        for j, a in enumerate(node.args):
            x = value[a]
            if is_number(x) and j not in op.numbers:
                raise self.error(BadExpression, f"argument {j} of {op.name} must be a tensor, "
                                 "not a number", self.column(a))
            args.append(x)
        try:
            op.check_arity(len(args))
        except ArityError as e:
            raise self.error(ArityError, e.detail, col) from None
        attrs, where = {}, {}
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error(BadExpression, "attributes are given one by one, name=value",
                                 self.column(kw.value))
            where[kw.arg] = self.column(kw.value)
            attrs[kw.arg] = self.literal(kw.value)
        try:
            op.check_attrs(attrs)
        except AutogradError as e:
            at = where.get(e.path[0], col) if e.path else col
            detail = e.detail if e.detail.startswith(op.name) else f"{op.name}: {e.detail}"
            raise self.error(BadAttribute, detail, at) from None
        return self.node(out, op.name, args, attrs, col, root)

    def literal(self, node: ast.expr):
        """A JSON value written inline: number, string, true/false/null (or Python's
        True/False/None), list, object with string keys."""
        n = _literal_number(node)
        if n is not None:
            return self.number(n, self.column(node))
        if isinstance(node, ast.Constant) and (node.value is None or
                                               isinstance(node.value, (str, bool))):
            return node.value
        if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
            return _JSON_NAMES[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.literal(e) for e in node.elts]
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) and
                                              isinstance(k.value, str) for k in node.keys):
            return {k.value: self.literal(v) for k, v in zip(node.keys, node.values,
                                                             strict=True)}
        raise self.error(BadExpression, "an attribute's value is a JSON literal: a number, a "
                         "string, true, false, null, a list or an object", self.column(node))

    def node(self, out: Expanded, op: str, args: list, attrs: dict, col: int, root: bool) -> str:
        nid = self.key if root else self.fresh()
        node = {"id": nid, "op": op, "args": args}
        if attrs:
            node["attrs"] = attrs
        out.append(node)
        out.origin[nid] = (self.key, col)
        return nid

    def fresh(self) -> str:
        """KEY:N, the next N whose id nothing in the request defines (cut to fit 128)."""
        while True:
            self.count += 1
            suffix = f":{self.count}"
            nid = self.key[: MAX_ID - len(suffix)] + suffix
            if nid not in self.taken:
                self.taken.add(nid)
                return nid


def _literal_number(node: ast.expr):
    """A number literal, optionally negated, or None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if isinstance(node, ast.Constant) and is_number(node.value) \
            and not isinstance(node.value, complex):
        return sign * node.value
    return None


def _negated_number(node: ast.expr) -> bool:
    return isinstance(node, ast.UnaryOp) and _literal_number(node) is not None


_REFUSED = {
    ast.Attribute: "attribute access (a.b) is not part of the expression language",
    ast.Lambda: "lambda is not part of the expression language",
    ast.ListComp: "comprehensions are not part of the expression language",
    ast.SetComp: "comprehensions are not part of the expression language",
    ast.DictComp: "comprehensions are not part of the expression language",
    ast.GeneratorExp: "comprehensions are not part of the expression language",
    ast.Compare: "comparisons are written as ops: greater(x, y), less(x, y)",
    ast.BoolOp: "and/or are not part of the expression language",
    ast.IfExp: "x if c else y is written where(c, x, y)",
    ast.NamedExpr: ":= is not part of the expression language",
    ast.Starred: "*args is not part of the expression language",
}


def _refusal(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp):
        return f"the operator {type(node.op).__name__} is not part of the expression language"
    if isinstance(node, ast.UnaryOp):
        return f"the unary operator {type(node.op).__name__} is not part of the expression " \
               "language (only -x)"
    return _REFUSED.get(type(node), f"{type(node).__name__} is not part of the expression "
                        "language")
