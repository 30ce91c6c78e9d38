"""gunicorn's worker for gradserve: one thread, whose event loop reads each request in full,
then computes the whole ones one at a time; connections are kept alive (HTTP/1.1).

    worker_class = "service.worker.Worker"   (service/gunicorn.conf.py)

A sync worker reads each request in the one thread that also computes, with no read timeout:
two silent sockets stall a 2-worker server, a trickling body stalls it until SIGKILL. gthread
hands each request to a thread pool and back: a queue, a pipe and four epoll changes per
request, about half of what a small request costs. Here the loop reads every connection until
its request is complete (framing below) and only then computes it, parsing from memory, so
the computation never waits on a client. A request must arrive in full within
request_timeout_s of its first byte (else 408); a connection with no request started is
closed after `keepalive` seconds. The response is written in one send.

A worker that has requests ready, or holds connections, waits a little before accepting one
(Worker._accept), so that new connections go to an idle or emptier sibling: kept-alive
connections stay with the worker that took them. A connection closes after 1,000 requests, so
that its client reconnects where there is room; a stopping worker answers what its idle
connections send for one more second. service/shedding.py reads the load from the kernel's
queue of connections not yet accepted.

Errors gunicorn answers itself (a malformed or oversized request head) are written as the
API's problem+json (service/errors.py), not gunicorn's HTML.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import socket
import time
from collections import deque
from datetime import datetime
from functools import partial

import orjson
from gunicorn import http
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.workers import base

from . import observability, shedding
from .config import Settings
from .errors import CODES, PROBLEM, title

log = logging.getLogger("gunicorn.error")

RECV = 256 * 1024
JOIN_BYTES = 256 * 1024  # an answer this small goes out in one send, its parts joined
LINGER_S = 2.0  # after a refusal, how long a connection's unread bytes are drained
STOP_LINGER_S = 1.0  # a stopping worker's idle connections stay open this long (Worker.run)
ACCEPT_BACKOFF_S = 0.0005  # per connection held, before accepting another (Worker._accept)
# Requests on one connection before it is closed (nginx's keepalive_requests): its client
# reconnects, to the worker holding the fewest. Connections of a worker that stopped (max_requests)
# all land on its siblings, and would otherwise stay there.
KEEPALIVE_REQUESTS = 1000
ACCEPT_PRESSURE = 8  # connections waiting past which a worker accepts at once
ACCEPT_STALE_S = 0.05  # a wait that ended this long ago was for a connection a sibling took
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


# ---- framing: is the request all here? -----------------------------------------------------

class Incoming:
    """One request's bytes as they arrive. `feed` says when it is ready for the parser: complete,
    or malformed or too large for its head (the parser names the fault), or `refusal` is set
    (a body past max_body_bytes: answered here, never read in full)."""

    def __init__(self, max_body: int, max_head: int):
        self.max_body, self.max_head = max_body, max_head
        self.buf = bytearray()
        self.end: int | None = None  # where the body ends, when its length is known
        self.chunk_at: int | None = None  # the next chunk's size line, in a chunked body
        self.decoded = 0
        self.expects_continue = False
        self.refusal: tuple[int, str, str] | None = None

    def feed(self, data: bytes) -> bool:
        self.buf += data
        if self.end is None and self.chunk_at is None and not self._head():
            return len(self.buf) > self.max_head  # the parser refuses a head this long
        if self.refusal or self.end is not None and self.end < 0:
            return True
        if self.chunk_at is not None:
            return self._chunks()
        return len(self.buf) >= self.end

    def _head(self) -> bool:
        """Parse the head once it is complete; False while it is not."""
        at = self.buf.find(b"\r\n\r\n")
        if at < 0:
            return False
        start = at + 4
        lines = bytes(self.buf[:at]).split(b"\r\n")
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
        coding = fields.get(b"transfer-encoding")
        length = fields.get(b"content-length")
        if coding:
            if coding[-1].rpartition(b",")[2].strip() != b"chunked":
                self.end = -1  # not a coding we read: the parser refuses it
                return True
            self.chunk_at = start
        elif length:
            if len(length) > 1 or not length[0].isdigit():
                self.end = -1  # the parser says what is wrong with it
                return True
            size = int(length[0])
            if size > self.max_body:
                self.refusal = _too_large(f"the body has {size:,} bytes", self.max_body)
                return True
            self.end = start + size
        else:
            self.end = start
        self.expects_continue = (fields.get(b"expect") == [b"100-continue"]
                                 and lines[0].endswith(b"HTTP/1.1"))
        return True

    def _chunks(self) -> bool:
        """Walk the chunks that have arrived; True at the end of the body (or a malformed one:
        the parser refuses it when the app reads the body)."""
        buf, at = self.buf, self.chunk_at
        while True:
            eol = buf.find(b"\r\n", at)
            if eol < 0:
                return len(buf) - at > 4096  # a size line this long is malformed
            size_text = bytes(buf[at:eol]).partition(b";")[0].strip()
            if not _HEX.fullmatch(size_text):
                self.end = -1
                return True
            size = int(size_text, 16)
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                if buf[eol:eol + 4] == b"\r\n\r\n" or buf.find(b"\r\n\r\n", eol) >= 0:
                    self.chunk_at = None
                    self.end = len(buf)
                    return True
                return len(buf) - eol > self.max_head
            self.decoded += size
            if self.decoded > self.max_body:
                self.refusal = _too_large(f"the chunked body passes {self.max_body:,} bytes",
                                          self.max_body)
                return True
            after = eol + 2 + size
            if len(buf) < after + 2:
                return False
            if buf[after:after + 2] != b"\r\n":
                self.end = -1
                return True
            at = self.chunk_at = after + 2


def _too_large(what: str, limit: int) -> tuple[int, str, str]:
    return 413, "body_too_large", f"{what}; the limit is {limit:,} (max_body_bytes)"


class _Memory:
    """The parser's byte source once a request has been read: the buffer in chunks of at most
    1 MiB (as gunicorn reads a socket), then end of file; `rest` is what it did not take."""

    CHUNK = 2**20

    def __init__(self, data: bytearray):
        self.view, self.at = memoryview(data), 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.at >= len(self.view):
            raise StopIteration
        out = bytes(self.view[self.at:self.at + self.CHUNK])
        self.at += len(out)
        return out

    def rest(self) -> bytes:
        out = bytes(self.view[self.at:])
        self.at = len(self.view)
        return out


class _Out:
    """A response's bytes as gunicorn's Response writes them (the head, then each body part),
    collected: the event loop sends them once the response is complete, as fast as the client
    reads (Worker._respond). gunicorn would write each part on its own, blocking the worker
    on a client that does not read."""

    def __init__(self):
        self.parts: list[bytes] = []

    def sendall(self, data) -> None:
        self.parts.append(bytes(data))

    def send(self, data) -> int:
        self.sendall(data)
        return len(data)


def _request_line(head: bytearray) -> tuple[str | None, str | None]:
    """The method and target of a request's first line, for the log; None when it has none."""
    end = head.find(b"\r\n", 0, 8192)
    line = bytes(head[:end if end >= 0 else 8192]).split(b" ")
    if len(line) != 3:
        return None, None
    return line[0].decode("latin-1")[:32], line[1].decode("latin-1")[:256]


def _recv(sock) -> bytes | None:
    """What a readable socket holds; b"" when the peer closed or failed, None for nothing yet."""
    try:
        return sock.recv(RECV)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


# ---- problem+json written by the worker ----------------------------------------------------

def problem_bytes(status: int, code: str, detail: str) -> bytes:
    body = orjson.dumps({"type": "about:blank", "title": title(status), "status": status,
                         "code": code, "detail": detail})
    retry = "Retry-After: 1\r\n" if status == 429 else ""
    head = (f"HTTP/1.1 {status} {title(status)}\r\nConnection: close\r\n{retry}"
            f"Content-Type: {PROBLEM}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def parse_error(exc: Exception) -> tuple[int, str, str] | None:
    """status, code and detail for a request gunicorn's parser refused; None for a bug."""
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, "header_too_large", f"the request's header fields are too large: {exc}"
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "uri_too_long", f"the request line is too long: {exc}"
    if isinstance(exc, (http_errors.InvalidResponseHeader,
                        http_errors.InvalidResponseHeaderName)):
        return None  # a header the app wrote
    if isinstance(exc, (http_errors.ParseException, http_errors.NoMoreData)):
        return 400, "bad_request", f"malformed HTTP request: {exc}"
    return None


# ---- the worker --------------------------------------------------------------------------

class Conn:
    """A client connection: its socket, and the request being read on it."""

    __slots__ = ("sock", "addr", "server", "incoming", "started", "sent_continue", "served",
                 "pending", "keep", "after")

    def __init__(self, sock, addr, server):
        self.sock, self.addr, self.server = sock, addr, server
        self.incoming: Incoming | None = None
        self.started: float | None = None  # when the request's first byte came
        self.sent_continue = False
        self.served = 0  # requests answered
        self.pending: deque[memoryview] | None = None  # the response's bytes not yet sent
        self.keep = False  # then: read the next request (with `after`, read past this one)
        self.after = b""


class Worker(base.Worker):
    """One thread: its event loop reads requests until they are whole, then computes the ready
    ones one at a time. A worker with requests ready does not accept, so that new connections
    wait in the kernel for an idle sibling (service/shedding.py reads that queue)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = Settings()
        self.max_body = settings.max_body_bytes
        self.request_timeout = settings.request_timeout_s
        self.max_buffered = settings.max_buffered_bytes
        cfg = self.cfg
        cfg.set("sendfile", False)  # every response goes out through _Out and the loop
        # the longest head the parser would read before refusing it
        self.max_head = (cfg.limit_request_line + 2
                         + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4)
        self.poller = None
        self.listening = False
        self.siblings = cfg.workers > 1
        self.accept_at: float | None = None  # a waiting connection is taken then (_accept)
        self.nr_conns = 0
        self.reading: dict[Conn, float] = {}  # deadline: keepalive if idle, else request's
        self.lingering: dict[Conn, float] = {}  # refused, its unread bytes drained until then
        self.writing: dict[Conn, float] = {}  # answers the client is slow to take, until then
        self.ready: deque[Conn] = deque()  # whole requests, in arrival order
        self.buffered = 0
        self.next_check = 0.0

    @classmethod
    def check_config(cls, cfg, log):
        if cfg.is_ssl:  # reading happens on raw sockets; TLS ends at the proxy (deploy/)
            raise RuntimeError("gradserve's worker serves plain HTTP: end TLS at a proxy")

    # -- the loop

    def init_process(self):
        self.poller = selectors.DefaultSelector()
        super().init_process()

    def run(self):
        self.listeners = {s.sock: s.sock.getsockname() for s in self.sockets}
        for sock in self.listeners:
            sock.setblocking(False)
        self.poller.register(self.PIPE[0], selectors.EVENT_READ,
                             partial(self._woken, self.PIPE[0]))  # signals
        self._listen()
        while self.alive:
            self._turn()
            if not self.is_parent_alive():
                break
        self._listen()
        # Stopping: requests that started are finished. An idle kept-alive connection stays
        # open STOP_LINGER_S: a request its client sends meanwhile is answered (with
        # Connection: close) instead of meeting a closed socket, as it would if closed now.
        now = time.monotonic()
        end = now + self.cfg.graceful_timeout
        for conn, deadline in self.reading.items():
            if conn.started is None:
                self.reading[conn] = min(deadline, now + STOP_LINGER_S)
        while ((self.ready or self.reading or self.lingering or self.writing)
               and time.monotonic() < end):
            self._turn()
        for conn in [*self.reading, *self.lingering, *self.writing, *self.ready]:
            self._close(conn)
        self.poller.close()

    def _turn(self):
        """Wait for sockets (not at all with requests ready), read what came, compute one."""
        now = time.monotonic()
        if now >= self.next_check:
            self.notify()
            self._check(now)
            self.next_check = now + 0.5
        timeout = 0 if self.ready else 0.5
        if not self.listening and self.accept_at is not None:
            if now >= self.accept_at:
                self._listen()
            else:
                timeout = min(timeout, self.accept_at - now)
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            events = ()
        for key, _ in events:
            key.data()
        if self.ready:
            self._compute(self.ready.popleft())

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _woken(self, fd: int):
        with contextlib.suppress(OSError):
            os.read(fd, 4096)

    def _listen(self):
        """Register the listening sockets or not, as accepting is allowed now or not."""
        on = (self.alive and self.nr_conns < self.cfg.worker_connections
              and (self.accept_at is None or time.monotonic() >= self.accept_at))
        if on == self.listening:
            return
        for sock in self.listeners:
            if on:
                self.poller.register(sock, selectors.EVENT_READ, partial(self._accept, sock))
            else:
                self.poller.unregister(sock)
        self.listening = on

    def _accept(self, listener):
        """Take one waiting connection, after leaving it to the siblings for a while if this
        worker has work or holds connections (_backoff): a kept-alive connection stays with
        the worker that took it, and without this a client opening 8 at once could have all 8
        served by one worker while the other idles."""
        now = time.monotonic()
        if self.accept_at is None or now - self.accept_at > ACCEPT_STALE_S:
            wait = self._backoff()
            if wait:
                self.accept_at = now + wait
                self._listen()  # off until then
                return
        self.accept_at = None
        try:
            sock, addr = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # a sibling took it, or the client gave up
        sock.setblocking(False)
        self.nr_conns += 1
        self._listen()
        conn = Conn(sock, addr, self.listeners[listener])
        self.poller.register(sock, selectors.EVENT_READ, partial(self._event, conn))
        self._start(conn)

    def _backoff(self) -> float:
        """How long a waiting connection is left to the siblings first: ACCEPT_BACKOFF_S per
        connection held (at most 8), and 8 more with requests ready. An idle worker holding
        none takes it at once; a busy one still takes it when no sibling has. With more than
        ACCEPT_PRESSURE connections waiting, none: new connections come faster than the
        waits would let them in, and the queue would grow into shedding's 429s."""
        held = min(self.nr_conns, 8) + (8 if self.ready else 0)
        if not self.siblings or not held:
            return 0.0
        waiting = shedding.queued(self.listeners)
        if waiting is not None and waiting > ACCEPT_PRESSURE:
            return 0.0
        return ACCEPT_BACKOFF_S * held

    def _check(self, now: float):
        """Close connections idle past their deadline, answer 408 to requests that take
        longer than request_timeout_s to arrive, end lingering."""
        for conn, deadline in list(self.reading.items()):
            if now < deadline:
                continue
            self._pull(conn, everything=True)  # a long computation kept us from reading it
            if conn not in self.reading or now < self.reading[conn]:
                continue  # its request is whole now, or one just began
            idle = conn.started is None
            del self.reading[conn]
            self.buffered -= len(conn.incoming.buf)
            if not idle:
                self._refuse(conn, 408, "request_timeout", "the request did not arrive in "
                             f"full within {self.request_timeout:g} s (request_timeout_s)")
            else:
                self._close(conn)
        for conn, deadline in list(self.lingering.items()):
            if now >= deadline:
                self._close(conn)
        for conn, deadline in list(self.writing.items()):
            if now >= deadline:  # a client that does not take its answer
                self._close(conn)

    # -- reading

    def _start(self, conn: Conn, leftover: bytes = b""):
        """Read the connection's next request, beginning with bytes already read past the last."""
        conn.incoming = Incoming(self.max_body, self.max_head)
        conn.sent_continue = False
        conn.started = None
        if leftover and self._feed(conn, leftover):
            return
        self.reading[conn] = self._deadline(conn)

    def _deadline(self, conn: Conn) -> float:
        if conn.started is None:
            return time.monotonic() + (self.cfg.keepalive or 2)
        return conn.started + self.request_timeout

    def _event(self, conn: Conn):
        """The connection's socket is ready: writable while an answer is going out (it is
        registered for nothing else then), else readable."""
        if conn in self.writing:
            self._flush(conn)
        else:
            self._readable(conn)

    def _readable(self, conn: Conn):
        if conn in self.lingering:
            if _recv(conn.sock) == b"":
                self._close(conn)
            return
        if conn in self.reading:  # else its request waits in `ready`, and the rest with it
            self._pull(conn)

    def _pull(self, conn: Conn, everything: bool = False):
        """Read into the request: one read (a turn of the loop is fair to every client), or
        with `everything` until the socket holds nothing more."""
        while conn in self.reading:
            data = _recv(conn.sock)
            if data is None:
                return
            if not data:  # the client went away
                del self.reading[conn]
                self.buffered -= len(conn.incoming.buf)
                self._close(conn)
                return
            first = conn.started is None
            if not self._feed(conn, data) and first:  # the request's timeout runs from now
                self.reading[conn] = self._deadline(conn)
            if not everything:
                return

    def _feed(self, conn: Conn, data: bytes) -> bool:
        """Add bytes; True once the connection has left the reading state."""
        incoming = conn.incoming
        if conn.started is None:
            conn.started = time.monotonic()
        self.buffered += len(data)
        if self.buffered > self.max_buffered:
            self.buffered -= len(incoming.buf) + len(data)
            self.reading.pop(conn, None)
            self._refuse(conn, 429, "overloaded", "this worker holds too many request bytes, "
                         "arriving or waiting to be computed; retry after Retry-After seconds")
            return True
        ready = incoming.feed(data)
        if incoming.refusal:
            self.buffered -= len(incoming.buf)
            self.reading.pop(conn, None)
            self._refuse(conn, *incoming.refusal)
            return True
        if ready:  # its bytes stay counted until it is computed
            self.reading.pop(conn, None)
            self.ready.append(conn)
            return True
        if incoming.expects_continue and not conn.sent_continue:
            conn.sent_continue = True  # the client waits for it before sending the body
            self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    # -- answering

    def _send(self, conn: Conn, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the client is gone: nothing to tell it
            conn.sock.send(data)  # small: fits the socket's buffer

    def _refuse(self, conn: Conn, status: int, code: str, detail: str):
        """Answer from here and close, draining what the client still sends for a while, so
        that it reads the answer instead of a reset."""
        answer = problem_bytes(status, code, detail)
        self._send(conn, answer)
        self._record(conn, conn.incoming.buf, status, code, len(answer))
        self._linger(conn)

    def _record(self, conn: Conn, head: bytearray, status: int, code: str, bytes_out: int):
        """The log line and metrics of a request answered here, as the app's have."""
        seconds = time.monotonic() - (conn.started or time.monotonic())
        observability.answered("other", *_request_line(head), status, seconds, len(head),
                               bytes_out, code=code)

    def _linger(self, conn: Conn):
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER_S

    def _close(self, conn: Conn):
        self.reading.pop(conn, None)
        self.lingering.pop(conn, None)
        self.writing.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.nr_conns -= 1
        self._listen()

    # -- computing

    def _compute(self, conn: Conn):
        """Parse the request from memory, run the app, and send the answer."""
        incoming, conn.incoming = conn.incoming, None
        self.buffered -= len(incoming.buf)
        source = _Memory(incoming.buf)
        parser = http.RequestParser(self.cfg, source, conn.addr)
        keep, req, parts = False, None, []
        try:
            req = next(parser)
            if conn.sent_continue:
                req._expected_100_continue = False  # the loop has sent it
            keep, parts = self.handle_request(req, conn)
            keep = keep and parser.finish_body()
        except Exception as exc:  # noqa: BLE001 - answered as problem+json, or logged
            keep, parts = False, [self._failed(conn, incoming.buf, exc)]
        self._respond(conn, parts, keep, parser.unreader.take_buffered() + source.rest())

    def handle_request(self, req, conn: Conn) -> tuple[bool, list[bytes]]:
        """Run the app on one request: whether the connection stays open after it, and the
        response's bytes. Nothing is sent before the response is complete, so a failure
        anywhere becomes a whole 500 (the caller's)."""
        self.cfg.pre_request(self, req)
        started = datetime.now()
        out = _Out()
        resp, environ = wsgi.create(req, out, conn.addr, conn.server, self.cfg)
        environ["wsgi.multithread"] = False
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            log.info("Autorestarting worker after current request.")
            self.alive = False
        conn.served += 1
        if not self.alive or not self.cfg.keepalive or conn.served >= KEEPALIVE_REQUESTS:
            resp.force_close()
        respiter = None
        try:
            respiter = self.wsgi(environ, resp.start_response)
            if isinstance(respiter, environ["wsgi.file_wrapper"]):
                resp.write_file(respiter)
            else:
                for item in respiter:
                    resp.write(item)
            resp.close()
        finally:
            self.log.access(resp, req, environ, datetime.now() - started)
            if hasattr(respiter, "close"):
                respiter.close()
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:  # noqa: BLE001 - a hook's failure is not the client's
                log.exception("Exception in post_request hook")
        return not resp.should_close(), out.parts

    def _failed(self, conn: Conn, head: bytearray, exc: Exception) -> bytes:
        """The answer to a request gunicorn could not parse, as problem+json; to anything
        else (a bug), a 500."""
        refused = parse_error(exc)
        if refused is None:
            log.exception("Error handling request")
            refused = 500, "internal", CODES["internal"][1]
        answer = problem_bytes(*refused)
        self._record(conn, head, refused[0], refused[1], len(answer))
        return answer

    # -- sending

    def _watch(self, conn: Conn, event: int):
        self.poller.modify(conn.sock, event, self.poller.get_key(conn.sock).data)

    def _respond(self, conn: Conn, parts: list[bytes], keep: bool, after: bytes):
        """Send an answer: what the socket takes now, the rest as the client reads (a slow
        reader holds its connection, never the worker). Then read the connection's next
        request, beginning with `after`, or close it."""
        if len(parts) > 1 and sum(map(len, parts)) <= JOIN_BYTES:
            parts = [b"".join(parts)]  # one send: one segment for a small answer
        conn.pending = deque(memoryview(p) for p in parts if p)
        conn.keep, conn.after = keep, after
        self._flush(conn)

    def _flush(self, conn: Conn):
        pending = conn.pending
        while pending:
            try:
                sent = conn.sock.send(pending[0])
            except (BlockingIOError, InterruptedError):
                break  # the socket's buffer is full
            except OSError:  # the client went away
                self._close(conn)
                return
            if sent < len(pending[0]):
                pending[0] = pending[0][sent:]
                break
            pending.popleft()
        if pending:
            if conn not in self.writing:  # on until the client takes it, or the deadline
                self.writing[conn] = time.monotonic() + self.request_timeout
                self._watch(conn, selectors.EVENT_WRITE)
            return
        if self.writing.pop(conn, None) is not None:
            self._watch(conn, selectors.EVENT_READ)
        conn.pending, after, conn.after = None, conn.after, b""
        if conn.keep and self.alive:
            self._start(conn, after)
        elif after:
            self._linger(conn)  # unread bytes would turn the close into a reset
        else:
            self._close(conn)
