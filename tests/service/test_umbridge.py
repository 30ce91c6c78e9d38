"""Hostile input on the UM-Bridge routes, one table: each is UM-Bridge's error body with its
status, never a 500, never a traceback, and the server answers right after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"name": "gauss", "input": [[0.5, 0.5]], "outWrt": 0, "inWrt": 0, "sens": [1.0]}


@pytest.fixture(scope="module")
def c():
    return create_app(Settings(models_dir=str(ROOT / "models"), max_body_bytes=4096)
                      ).test_client()


def edit(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


HOSTILE = [
    # name, endpoint, body, status, type
    ("deep nesting", "Evaluate", b"[" * 100_000 + b"]" * 100_000, 413, "InvalidInput"),
    ("deep nesting under the limit", "Evaluate", b"[" * 2000 + b"]" * 2000, 400, "InvalidInput"),
    ("deep input", "Evaluate", edit(input=json.loads("[" * 500 + "]" * 500)), 400,
     "InvalidInput"),
    ("not UTF-8", "Evaluate", b'{"name": "\xff"}', 400, "InvalidInput"),
    ("a name that is a list", "ModelInfo", edit(name=["gauss"]), 400, "ModelNotFound"),
    ("no name", "InputSizes", b"{}", 400, "ModelNotFound"),
    ("input a number", "Evaluate", edit(input=1), 400, "InvalidInput"),
    ("input vector a number", "Evaluate", edit(input=[1.0]), 400, "InvalidInput"),
    ("strings in input", "Evaluate", edit(input=[["a", 1]]), 400, "InvalidInput"),
    ("booleans in input", "Evaluate", edit(input=[[True, False]]), 400, "InvalidInput"),
    ("nulls in input", "Evaluate", edit(input=[[None, 1]]), 400, "InvalidInput"),
    ("nested input vector", "Evaluate", edit(input=[[[1], [2]]]), 400, "InvalidInput"),
    ("objects in input", "Gradient", edit(input=[[{}, 1]]), 400, "InvalidInput"),
    ("a huge index", "Gradient", edit(inWrt=10**30), 400, "InvalidInput"),
    ("strings in sens", "Gradient", edit(sens=["x"]), 400, "InvalidInput"),
    ("too many inputs", "Evaluate", edit(input=[[0, 0], [0, 0]]), 400, "InvalidInput"),
    ("no inputs", "Evaluate", edit(input=[]), 400, "InvalidInput"),
    ("a body over the limit", "Evaluate", edit(input=[[0.0] * 2000]), 413, "InvalidInput"),
]


@pytest.mark.parametrize("name, endpoint, body, status, kind", HOSTILE,
                         ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_umbridges_error(c, name, endpoint, body, status, kind):
    r = c.post("/umbridge/" + endpoint, data=body)
    assert r.status_code == status, r.data[:300]
    doc = json.loads(r.data)
    assert doc["error"]["type"] == kind and list(doc) == ["error"], doc
    assert "Traceback" not in r.get_data(as_text=True)
    after = c.post("/umbridge/Gradient", data=json.dumps(GOOD))
    assert after.status_code == 200 and json.loads(after.data) == {"output": [0.5, -0.375]}


def test_an_unknown_umbridge_endpoint_is_a_404_in_umbridges_format(c):
    r = c.post("/umbridge/Nope", data=b"{}")
    assert r.status_code == 404 and json.loads(r.data)["error"]["type"] == "NotFound"


def test_numbers_past_float64_are_infinite_as_pythons_json_reads_them(c):
    for number in (b"1e999", b"1" * 400):
        r = c.post("/umbridge/Evaluate", data=b'{"name": "gauss", "input": [[%s, NaN]]}' % number)
        assert r.status_code == 200 and r.data == b'{"output": [[NaN]]}'
        r = c.post("/umbridge/Evaluate", data=b'{"name": "gauss", "input": [[%s, 1]]}' % number)
        assert r.status_code == 200 and r.data == b'{"output": [[-Infinity]]}'
