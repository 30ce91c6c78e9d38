"""A one-minute soak (bench/soak.py): mixed valid and hostile traffic against a real gunicorn
gets no 5xx, no wrong answer, no dropped connection, no dead worker, and flat memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_minute_of_hostile_traffic_leaves_the_server_as_it_was():
    out = subprocess.run([sys.executable, "bench/soak.py", "--minutes", "1", "--warmup", "15",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["requests"] > 1000, r
    assert r["5xx"] == 0, r["by_status"]
    assert r["wrong"] == {} and r["errors"] == {}, (r["wrong"], r["errors"])
    assert set(r["by_status"]) >= {"200", "400", "401", "404", "405", "413", "415", "422"}
    assert r["worker_deaths"] == 0, r["log"]
    assert r["worker_restarts"] == r["recycled"], r["log"]  # only max_requests recycling
    # Flat, not climbing. RSS is a high-water mark here: gunicorn.conf.py raises glibc's trim
    # threshold, so freed memory stays with the worker, and the biggest hostile bodies lift
    # it a step whenever they first come (one sample can also be 30% over the next). A leak
    # climbs on: the last quarter of the minute well above the third, or the second half
    # far above where it started.
    rss = [b for _, b in r["rss_samples"]] + [r["rss_end"]]
    half, quarter = len(rss) // 2, len(rss) * 3 // 4
    third_q, last_q = rss[half:quarter], rss[quarter:]
    assert statistics.median(last_q) < 1.15 * statistics.median(third_q), (
        r["rss_start"], r["rss_samples"])
    assert statistics.median(rss[half:]) < 1.35 * r["rss_start"], (r["rss_start"],
                                                                     r["rss_samples"])
