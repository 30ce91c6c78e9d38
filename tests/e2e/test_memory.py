"""The per-worker memory cap (RLIMIT_AS, set in gunicorn's post_fork): what the shape limits
let through and memory cannot hold becomes a 413, and the worker that hit it serves on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from service.config import Settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

MiB = 2**20
DEFAULT_CAP = Settings.model_fields["worker_memory_bytes"].default


def workers(server) -> list[int]:
    pid = server.proc.pid
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def status(pid: int, field: str) -> int:
    """A /proc/<pid>/status size in bytes, e.g. VmSize."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split()[1:3]
            assert unit == "kB"
            return int(value) * 1024
    raise KeyError(field)


def address_space_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise KeyError("Max address space")


def outer(n: int) -> dict:
    """sum(c + r) with c (n, 1) and r (1, n): an n x n temporary, 4 n² bytes in float32."""
    return {"inputs": {"c": {"shape": [n, 1], "data": [1] * n},
                       "r": {"shape": [1, n], "data": [2] * n}},
            "nodes": [{"id": "o", "op": "add", "args": ["c", "r"]},
                      {"id": "s", "op": "sum", "args": ["o"]}], "outputs": ["s"]}


def test_the_default_cap_is_set_and_far_above_a_workers_baseline(server):
    pids = workers(server)
    assert pids
    for pid in pids:
        assert address_space_limit(pid) == DEFAULT_CAP
        assert status(pid, "VmSize") * 8 < DEFAULT_CAP, status(pid, "VmSize")
    assert address_space_limit(server.proc.pid) is None  # the master is not capped


def test_an_allocation_past_the_cap_is_a_413_and_the_worker_survives(server, start_server,
                                                                     example):
    # a cap of a worker's own size plus 200 MB, and shape limits that let 1.6 GB through
    baseline = max(status(pid, "VmSize") for pid in workers(server))
    capped = start_server(workers=1, worker_memory_bytes=baseline + 200 * MiB,
                          max_elements=2**31, max_total_bytes=2**40, max_flops=1e15)
    before = workers(capped)
    assert address_space_limit(before[0]) == baseline + 200 * MiB

    r = requests.post(capped.url + "/v1/evaluate", json=outer(20_000), timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["code"] == "graph_too_large"
    assert "out of memory" in r.json()["detail"]

    fine = requests.post(capped.url + "/v1/evaluate", json=example, timeout=60)
    assert fine.status_code == 200
    assert np.isclose(fine.json()["outputs"]["loss"]["data"], 0.7743165)
    small = requests.post(capped.url + "/v1/evaluate", json=outer(100), timeout=60)
    assert small.json()["outputs"]["s"]["data"] == 3 * 100 * 100
    assert workers(capped) == before
    assert capped.output().count("Booting worker") == 1
