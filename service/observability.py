"""What each request leaves behind: a request id, one JSON log line, and its metrics.

Every request gets an id (the client's `X-Request-ID` when it is sane, else a
new one), echoed in the response. When it is answered it is counted
(service/metrics.py) and logged as one JSON line on stderr. Every record of
the "gradserve" logger (errors.py's tracebacks included) goes through the same
formatter, once, carrying the id of the request it happened in.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
from flask import Flask, g, has_request_context, request
from flask.logging import default_handler

from . import metrics

log = logging.getLogger("gradserve")
request_log = logging.getLogger("gradserve.request")

REQUEST_ID = "X-Request-ID"
# A client's id goes into logs and back into a header: short, and no spaces, quotes or
# control characters. Covers UUIDs, nginx's $request_id and most tracing ids.
SANE_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")


def request_id(sent: str | None) -> str:
    """The client's id if it is sane, else a fresh one."""
    return sent if sent and SANE_ID.fullmatch(sent) else uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id when there
    is a request, the record's `fields`, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when the record comes (a test may have swapped it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def configure_logging(level: str) -> None:
    """JSON on stderr for the "gradserve" loggers; idempotent (tests build many apps)."""
    log.removeHandler(default_handler)  # Flask's own, had it attached it: no second line
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
    log.setLevel(logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    log.propagate = False  # a handler on the root logger would write each record again


class _CountedInput:
    """The WSGI input, counting the bytes the app reads: a body refused unread costs 0."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, *size):
        data = self.stream.read(*size)
        self.count += len(data)
        return data

    def readline(self, *size):
        line = self.stream.readline(*size)
        self.count += len(line)
        return line

    def readlines(self, *hint):
        return list(self)

    def __iter__(self):
        return iter(self.readline, b"")


def init_app(app: Flask, level: str) -> None:
    """Log, count and tag every request of `app`."""
    configure_logging(level)
    inner = app.wsgi_app

    def counted(environ, start_response):
        environ["wsgi.input"] = _CountedInput(environ["wsgi.input"])
        return inner(environ, start_response)

    app.wsgi_app = counted
    # First of the before_request hooks, so that the time and the id cover the guard too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_teardown)


def _start():
    g.request_id = request_id(request.headers.get(REQUEST_ID))
    g.started = time.perf_counter()
    g.in_flight = True
    metrics.IN_FLIGHT.inc()


def _finish(response):
    seconds = time.perf_counter() - g.started
    # The route's path, never the client's: unknown paths share one label.
    endpoint = request.url_rule.rule if request.url_rule else "other"
    nodes = g.get("stats", {}).get("nodes")
    counted = request.environ.get("wsgi.input")
    bytes_in = counted.count if isinstance(counted, _CountedInput) else 0
    bytes_out = response.calculate_content_length() or 0
    metrics.observe(endpoint, response.status_code, seconds, bytes_in, bytes_out, nodes)
    fields = {"method": request.method, "path": request.path, "status": response.status_code,
              "duration_ms": round(seconds * 1e3, 3), "bytes_in": bytes_in,
              "bytes_out": bytes_out, "pid": os.getpid()}
    if nodes is not None:
        fields["nodes"] = nodes
    request_log.info("request", extra={"fields": fields})
    response.headers[REQUEST_ID] = g.request_id
    return response


def _teardown(_exc):
    if g.pop("in_flight", False):
        metrics.IN_FLIGHT.dec()
