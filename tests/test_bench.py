"""The benchmarks run: each script, at its smallest, prints every section and exits 0.

Figures are not checked (timings on this machine are noise at this size, and benchmarks never
gate tests); a script that crashes is. bench/soak.py has its own test (tests/e2e/test_soak.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script and its smallest run, the headers of the sections it must print
RUNS = [
    ("engine.py", ["--repeats", "1", "--budget", "0.001", "--nodes", "20", "--no-torch"],
     ["(1) per-node", "(2) MLP", "(5) derivatives", "(6) per-example", "(7a) per-node"]),
    ("http.py", ["--quick", "--seconds", "1", "--load", "python"],
     ["(a) PROTOCOL.md §1", "(b) a 1,000-node", "(c) 2048x2048", "(d) one client",
      "(e) the §1 example"]),
    ("interop.py", ["--quick", "--load", "python"],
     ["(a) UM-Bridge Gradient", "(b) the banana model"]),
]


@pytest.mark.parametrize(("script", "args", "sections"), RUNS, ids=[r[0] for r in RUNS])
def test_the_benchmark_runs_every_section(script, args, sections):
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    for header in sections:
        assert header in done.stdout, f"no section {header!r}:\n{done.stdout[-2000:]}"
    assert "\ntook " in done.stdout and "Traceback" not in done.stderr
