"""Hostile expressions (PROTOCOL.md §12) against a real gunicorn: each is a 413 or 422 at
/expr/KEY in well under 100 ms, over HTTP, and no worker dies or is replaced."""

from __future__ import annotations

import time

import pytest
import requests

from tests.autograd.test_expr import HOSTILE
from tests.e2e.test_server import workers

X = {"x": {"data": [[1, 2], [3, 4]]}}


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def test_hostile_expressions_are_refused_fast_and_no_worker_dies(server, session):
    before = sorted(workers(server.proc.pid))
    for text in HOSTILE:
        best = float("inf")
        for _ in range(3):  # best of three: the machine is shared
            start = time.perf_counter()
            r = session.post(server.url + "/v1/evaluate", json={"inputs": X, "expr": {"k": text}},
                             timeout=10)
            best = min(best, time.perf_counter() - start)
        problem = r.json()
        assert r.status_code in (413, 422), problem
        assert problem["code"] in ("bad_expression", "expression_too_large"), problem
        assert problem["errors"][0]["pointer"] == "/expr/k"
        assert best < 0.1, (text[:20], best)
    ok = session.post(server.url + "/v1/evaluate", timeout=10, json={
        "inputs": X, "expr": {"y": "sum(x * 2)"}})
    assert ok.status_code == 200 and ok.json()["outputs"]["y"]["data"] == 20.0
    assert sorted(workers(server.proc.pid)) == before
