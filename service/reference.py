"""The README's reference tables, generated: ops from the registry, error codes, settings.

    python -m service.reference          # rewrite README.md's generated sections in place
    python -m service.reference --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from autograd import OPS

from .config import Settings
from .errors import CODES


def ops_table() -> str:
    rows = ["| op | args | attributes | forward | gradient |", "| --- | --- | --- | --- | --- |"]
    for op in OPS.values():
        args = op.arity_text
        if op.numbers:
            args += "; a number may stand for " + (
                "either" if len(op.numbers) == 2 else f"arg {op.numbers[0]}")
        attrs = ", ".join(f"`{a.name}`" + ("" if a.required else f" = {json.dumps(a.default)}")
                          for a in op.attrs)
        rows.append(f"| `{op.name}` | {args} | {attrs} | {_cell(op.doc)} | {_cell(op.grad_doc)} |")
    return "\n".join(rows)


def codes_table() -> str:
    rows = ["| status | code | when |", "| --- | --- | --- |"]
    for code, (status, when) in sorted(CODES.items(), key=lambda kv: (kv[1][0], kv[0])):
        rows.append(f"| {status} | `{code}` | {when} |")
    return "\n".join(rows)


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "workers":
            default = "number of CPUs"
        elif isinstance(default, tuple):
            default = ",".join(default) or "(none)"
        elif isinstance(default, int) and default >= 2**20 and name.endswith("bytes"):
            default = f"{default:,} ({_human(default)})"
        elif isinstance(default, int):
            default = f"{default:,}"
        elif isinstance(default, float):
            default = f"{default:g}"
        rows.append(f"| `GRADSERVE_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


SECTIONS = {"ops": ops_table, "codes": codes_table, "settings": settings_table}


def render(text: str) -> str:
    for name, table in SECTIONS.items():
        begin, end = f"<!-- BEGIN {name} (generated) -->", f"<!-- END {name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        block = f"{begin}\n{table()}\n{end}"
        text = pattern.sub(lambda _, block=block: block, text)
    return text


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def main(argv: list[str]) -> int:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print("README.md is out of date: run `python -m service.reference`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
