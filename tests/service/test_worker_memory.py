"""What a worker holds of its clients' requests (service/worker.py): the bytes of requests
arriving and of whole ones waiting to be computed, together under max_buffered_bytes. Past
it, the upload that would cross it is refused 429 with Retry-After, and computing a request
lets its bytes go."""

from __future__ import annotations

import selectors
import socket
from collections import deque
from functools import partial

import pytest
from gunicorn.config import Config

from service.worker import Conn, Worker

LIMIT = 1000


def request(size: int) -> bytes:
    head = b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    return head + b"x" * size


@pytest.fixture
def worker():
    """A worker's reading state, without gunicorn around it."""
    w = Worker.__new__(Worker)
    w.cfg = Config()  # gunicorn's defaults
    w.max_body, w.max_head, w.max_buffered, w.request_timeout = 10_000, 8192, LIMIT, 60.0
    w.buffered, w.nr_conns, w.alive = 0, 0, True
    w.reading, w.lingering, w.writing, w.ready = {}, {}, {}, deque()
    w.poller, w.listeners, w.listening, w.accept_at = selectors.DefaultSelector(), {}, False, None
    yield w
    w.poller.close()


@pytest.fixture
def conns(worker):
    """Connections to `worker`, each with the client's end of its socket."""
    made = []

    def connect():
        server, client = socket.socketpair()
        client.settimeout(10)
        server.setblocking(False)
        conn = Conn(server, ("127.0.0.1", 0), ("127.0.0.1", 8000))
        worker.nr_conns += 1
        worker.poller.register(server, selectors.EVENT_READ, partial(worker._event, conn))
        worker._start(conn)
        made.append((server, client))
        return conn, client

    yield connect
    for pair in made:
        for s in pair:
            s.close()


def test_whole_requests_waiting_stay_counted_until_computed(worker, conns):
    a, _ = conns()
    assert worker._feed(a, request(600))  # whole: it waits in `ready`
    assert list(worker.ready) == [a] and worker.buffered == len(request(600))
    b, client = conns()
    assert worker._feed(b, request(600))  # past the limit with `a` still held
    status_line, _, rest = client.recv(4096).partition(b"\r\n")
    assert status_line == b"HTTP/1.1 429 Too Many Requests" and b"Retry-After: 1" in rest
    assert b'"code":"overloaded"' in rest and list(worker.ready) == [a]
    assert worker.buffered == len(request(600))


def test_computing_a_request_lets_its_bytes_go(worker, conns, monkeypatch):
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    monkeypatch.setattr(Worker, "handle_request", lambda self, req, conn: (True, [ok]))
    a, client = conns()
    worker._feed(a, request(600))
    worker._compute(worker.ready.popleft())
    assert client.recv(4096) == ok
    assert worker.buffered == 0 and a in worker.reading  # kept alive, reading the next
    b, _ = conns()
    assert worker._feed(b, request(600)) and list(worker.ready) == [b]
