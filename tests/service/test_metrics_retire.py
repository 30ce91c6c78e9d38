"""A recycled worker's metric files are folded into one archive: same sums, no pile of files."""

import json
import os
import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

# Each "worker" is a subprocess with its own pid that counts `n` requests, as gunicorn's do.
WORKER = """
import sys
from service import metrics
for _ in range(int(sys.argv[1])):
    metrics.observe("/v1/evaluate", 200, 0.01, 10, 20, 3)
"""


def _work(env, n) -> int:
    proc = subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True)
    return proc.returncode


def _totals(path) -> dict:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name in ("gradserve_requests_total", "gradserve_nodes_evaluated_total",
                          "gradserve_request_duration_seconds_count"):
                out[s.name] = s.value
    return out


def test_retired_workers_fold_into_one_archive(tmp_path, monkeypatch):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from service import metrics

    for n in (3, 4, 5):
        _work(env, n)
    pids = sorted({int(f.rsplit("_", 1)[1][:-3]) for f in os.listdir(tmp_path)
                   if f.startswith("counter_")})
    assert len(pids) == 3
    before = _totals(tmp_path)
    assert before["gradserve_requests_total"] == 12

    for pid in pids:
        metrics.retire(pid)

    assert _totals(tmp_path) == before
    names = sorted(os.listdir(tmp_path))
    assert names == ["counter_archive.db", "histogram_archive.db"], json.dumps(names)
