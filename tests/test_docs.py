"""The documentation points only at files the repository has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/PROTOCOL.md", "bench/README.md"]
# A relative path with a folder, in backticks or as a link target: `service/app.py`, (docs/X.md)
PATH = re.compile(r"[`(]((?:[A-Za-z_][\w.-]*/)+[\w.-]*)[`)]")


def test_every_file_a_doc_points_at_exists():
    # a path into one of the repository's own folders (not `text/html`, `HTTP/1.1`, or a
    # path in another project's repository)
    ours = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != ".venv"}
    named = {(doc, p) for doc in DOCS for p in PATH.findall((ROOT / doc).read_text())
             if p.split("/")[0] in ours or (ROOT / doc).parent.joinpath(p.split("/")[0]).is_dir()}
    assert len(named) > 10, "the pattern finds no paths"
    missing = sorted((doc, p) for doc, p in named
                     if not (ROOT / p).exists() and not (ROOT / doc).parent.joinpath(p).exists())
    assert missing == [], "the docs point at files that are not in the repository"
