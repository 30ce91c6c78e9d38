"""What each request leaves behind: a request id, one JSON log line, and its metrics.

Every request gets an id (the client's `X-Request-ID` when it is sane, else a
new one), echoed in the response. When it is answered it is counted
(service/metrics.py) and logged as one JSON line on stderr. Every record of
the "gradserve" logger (errors.py's tracebacks included) goes through the same
formatter, once, carrying the id of the request it happened in.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
from flask import Flask
from flask.logging import default_handler

from . import errors, metrics

log = logging.getLogger("gradserve")
request_log = logging.getLogger("gradserve.request")

REQUEST_ID = "X-Request-ID"
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's id goes into logs and back into a header: short, and no spaces, quotes or
# control characters. Covers UUIDs, nginx's $request_id and most tracing ids.
SANE_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")


def request_id(sent: str | None) -> str:
    """The client's id if it is sane, else a fresh one: 32 hex digits, a random half per
    process and a count (a uuid4 costs a system call per request)."""
    if sent and SANE_ID.fullmatch(sent):
        return sent
    global _prefix, _pid, _count
    if _pid != os.getpid():  # a new worker: forked from a process that may have used these
        _prefix, _pid, _count = os.urandom(8).hex(), os.getpid(), itertools.count()
    return f"{_prefix}{next(_count):016x}"


_prefix, _pid, _count = "", -1, itertools.count()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id when there
    is a request, the record's `fields`, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        rid = _request_id.get()
        if rid is not None:
            entry["request_id"] = rid
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
        """logging sets it in __init__; the property above answers instead."""


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


NODES = "gradserve.nodes"  # environ key: the view leaves the nodes it evaluated there
ROUTE = "gradserve.route"  # environ key: the route's rule (/v1/models/<name>), for the label


class Observed:
    """WSGI middleware: the request id, the in-flight gauge, the metrics and the log line.

    Middleware rather than Flask hooks: it costs a few microseconds a request where the
    hooks, each resolved through Flask's context-local proxies, cost a hundred."""

    def __init__(self, app, endpoints):
        self.app, self.endpoints = app, endpoints

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        token = _request_id.set(rid)
        counted = environ["wsgi.input"] = _CountedInput(environ["wsgi.input"])
        answer = {}

        def respond(status, headers, exc_info=None):
            headers.append((REQUEST_ID, rid))
            answer["status"], answer["headers"] = status, headers
            return start_response(status, headers, exc_info)

        metrics.IN_FLIGHT.inc()
        try:
            return self.app(environ, respond)
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(environ, answer, time.perf_counter() - started, counted.count)
            _request_id.reset(token)

    def _record(self, environ, answer, seconds, bytes_in):
        status = int(answer.get("status", "500")[:3])
        bytes_out = next((int(v) for k, v in answer.get("headers", ())
                          if k.lower() == "content-length"), 0)
        path = environ.get("PATH_INFO", "")
        # the route's path, never the client's: unknown paths share one label
        endpoint = environ.get(ROUTE) or (path if path in self.endpoints else "other")
        answered(endpoint, environ.get("REQUEST_METHOD"), path, status, seconds, bytes_in,
                 bytes_out, nodes=environ.get(NODES), code=environ.get(errors.CODE))


def answered(endpoint: str, method: str | None, path: str | None, status: int, seconds: float,
             bytes_in: int, bytes_out: int, **more) -> None:
    """Count and log one answered request: the app's (Observed), or one the worker refused
    itself (service/worker.py: a malformed head, a body too large or too slow), which has no
    endpoint ("other") and perhaps no method or path."""
    nodes = more.get("nodes")
    metrics.observe(endpoint, status, seconds, bytes_in, bytes_out, nodes)
    fields = {"method": method, "path": path, "status": status,
              "duration_ms": round(seconds * 1e3, 3), "bytes_in": bytes_in,
              "bytes_out": bytes_out, "pid": os.getpid()}
    fields.update((k, v) for k, v in more.items() if v is not None)
    if request_log.isEnabledFor(logging.INFO):  # made directly: no search for the caller
        request_log.handle(request_log.makeRecord(
            request_log.name, logging.INFO, __file__, 0, "request", (), None,
            extra={"fields": fields}))


def init_app(app: Flask, level: str, endpoints) -> None:
    """Log, count and tag every request of `app`; `endpoints` are the routes' paths."""
    configure_logging(level)
    app.wsgi_app = Observed(app.wsgi_app, frozenset(endpoints))
