"""Prometheus metrics and GET /metrics.

Under gunicorn every worker is its own process, so the figures live in files
under PROMETHEUS_MULTIPROC_DIR (service/gunicorn.conf.py sets it before this
module is imported) and /metrics sums every worker's, dead ones' included.
Without that variable (Flask's test client, a single process) the ordinary
in-process registry answers.
"""

from __future__ import annotations

import functools
import os

from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.mmap_dict import MmapedDict

REQUESTS = Counter("gradserve_requests", "Requests answered, by endpoint and status",
                   ["endpoint", "status"])
LATENCY = Histogram("gradserve_request_duration_seconds", "Time to answer a request, by endpoint",
                    ["endpoint"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5,
                                           1, 2.5, 5, 10, 30, 60))
NODES = Counter("gradserve_nodes_evaluated", "Graph nodes evaluated")
BYTES_IN = Counter("gradserve_request_bytes", "Request body bytes received, by endpoint",
                   ["endpoint"])
BYTES_OUT = Counter("gradserve_response_bytes", "Response body bytes sent, by endpoint",
                    ["endpoint"])
# livesum: a dead worker's requests are no longer in flight (gunicorn.conf.py's child_exit).
IN_FLIGHT = Gauge("gradserve_requests_in_flight", "Requests being answered now",
                  multiprocess_mode="livesum")


def observe(endpoint: str, status: int, seconds: float, bytes_in: int, bytes_out: int,
            nodes: int | None) -> None:
    """Count one answered request."""
    requests, latency, bytes_in_, bytes_out_ = _series(endpoint, status)
    requests.inc()
    latency.observe(seconds)
    bytes_in_.inc(bytes_in)
    bytes_out_.inc(bytes_out)
    if nodes:
        NODES.inc(nodes)


@functools.lru_cache(maxsize=1024)  # endpoints are route paths: a few dozen with statuses
def _series(endpoint: str, status: int) -> tuple:
    """The labelled series of one endpoint and status, looked up once (each lookup locks)."""
    return (REQUESTS.labels(endpoint, str(status)), LATENCY.labels(endpoint),
            BYTES_IN.labels(endpoint), BYTES_OUT.labels(endpoint))


def metrics() -> Response:
    """The Prometheus text exposition, summed over every gunicorn worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def retire(pid: int) -> None:
    """Account for a worker that exited (gunicorn's child_exit hook, in the master).

    Its in-flight gauge leaves the sums. Its counters and histograms stay in them, folded
    into one archive file per kind: a worker recycled by max_requests would otherwise leave
    its files behind for good, and every scrape would read all of them. (A scrape between
    the fold and the removal may count the worker twice, once.)
    """
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    multiprocess.mark_process_dead(pid, path)
    for kind in ("counter", "histogram"):
        dead = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = MmapedDict(os.path.join(path, f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, timestamp)
        finally:
            archive.close()
        os.remove(dead)
