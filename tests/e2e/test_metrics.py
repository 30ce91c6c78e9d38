"""GET /metrics under a real gunicorn: the figures are the sum over every worker, including
workers that have since exited, and start from zero whatever an earlier run left behind;
a metrics directory gunicorn.conf.py made itself is removed at exit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

EVALUATE = {"endpoint": "/v1/evaluate"}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(url + "/metrics", timeout=30).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(figures: dict, name: str, **labels) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


def evaluate(server, body: bytes, ids: list[str]) -> None:
    for rid in ids:
        r = requests.post(server.url + "/v1/evaluate", data=body, timeout=30,
                          headers={"Content-Type": "application/json", "X-Request-ID": rid})
        assert r.status_code == 200 and r.headers["X-Request-ID"] == rid


def served_by(server, ids: list[str]) -> dict[str, int]:
    """request id -> pid of the worker that answered it, from the server's JSON log lines."""
    lines = [orjson.loads(line) for line in server.output().splitlines()
             if line.startswith("{")]
    pids = {line["request_id"]: line["pid"] for line in lines if "pid" in line}
    return {rid: pids[rid] for rid in ids}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped


def wait_for(condition, what: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def metrics_dir(worker: int) -> Path:
    """The worker's PROMETHEUS_MULTIPROC_DIR, from the files it has mapped (gunicorn.conf.py
    sets the variable after exec, so /proc/PID/environ does not show it)."""
    maps = Path(f"/proc/{worker}/maps").read_text().split()
    (directory,) = {Path(word).parent for word in maps if word.endswith(".db")}
    return directory


def test_metrics_sum_over_workers_including_exited_ones(start_server, example):
    server = start_server(workers=2)
    body = orjson.dumps(example)
    n = 40
    first = [f"first-{i}" for i in range(n // 2)]
    evaluate(server, body, first)
    first_pids = set(served_by(server, first).values())
    directory = metrics_dir(next(iter(first_pids)))

    # Stop every worker that answered so far: gunicorn forks new ones, and what the old ones
    # counted must stay in the sums while their in-flight gauges leave them.
    for pid in first_pids:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: all(gone(pid) for pid in first_pids), "the workers to exit")
    wait_for(lambda: not any((directory / f"gauge_livesum_{pid}.db").exists()
                             for pid in first_pids), "child_exit to mark them dead")
    second = [f"second-{i}" for i in range(n - n // 2)]
    evaluate(server, body, second)
    assert not set(served_by(server, second).values()) & first_pids

    figures = scrape(server.url)
    assert value(figures, "gradserve_requests_total", **EVALUATE, status="200") == n
    assert value(figures, "gradserve_request_duration_seconds_count", **EVALUATE) == n
    assert value(figures, "gradserve_nodes_evaluated_total") == n * len(example["nodes"])
    assert value(figures, "gradserve_request_bytes_total", **EVALUATE) == n * len(body)
    assert value(figures, "gradserve_response_bytes_total", **EVALUATE) > 0
    assert value(figures, "gradserve_requests_in_flight") == 1  # this scrape, nothing else

    # The directory was made for this run (the environment named none): gone at exit.
    assert directory.name.startswith("gradserve-metrics-")
    assert server.stop() == 0
    assert not directory.exists()


def test_metrics_start_from_zero_in_a_directory_left_by_an_earlier_run(
        start_server, tmp_path, monkeypatch, example):
    """As a container restarted in the same pod finds its PROMETHEUS_MULTIPROC_DIR."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the servers inherit it
    body = orjson.dumps(example)
    runs = []
    for ids in (["earlier-0", "earlier-1", "earlier-2"], ["later-0"]):
        server = start_server()
        evaluate(server, body, ids)
        runs.append(value(scrape(server.url), "gradserve_requests_total", **EVALUATE,
                          status="200"))
        server.stop()
        assert list(tmp_path.glob("*.db"))  # given by the environment: kept after exit
    assert runs == [3, 1]
