"""gunicorn's worker for gradserve: requests are read in full by an event loop, then computed
one at a time by the worker's single thread, and connections are kept alive (HTTP/1.1).

    worker_class = "service.worker.Worker"; threads = 1   (service/gunicorn.conf.py)

A sync worker reads each request in the one thread that also computes, with no read timeout:
two silent sockets stall a 2-worker server, a trickling body stalls it until SIGKILL. gthread
with one thread hands a new connection to that thread before a byte has arrived (and waits
5 s for one there). Here the worker's main loop (gthread's poller) reads every request until
it is complete, and only then gives it to the thread, which parses it from memory and never
waits on a client. A request must arrive in full within request_timeout_s of its first byte
(else 408); a connection with no request started is closed after `keepalive` seconds.

A worker stops accepting while its thread has work, so that new connections queue in the
kernel for an idle sibling, and service/shedding.py still reads the load from that queue.

Errors gunicorn answers itself (a malformed or oversized request head) are written as the
API's problem+json (service/errors.py), not gunicorn's HTML.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from functools import partial

import orjson
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from .config import Settings
from .errors import CODES, PROBLEM, title

log = logging.getLogger("gunicorn.error")

RECV = 256 * 1024
LINGER_S = 2.0  # after a refusal, how long a connection's unread bytes are drained
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
    """The parser's byte source once a request has been read: the buffer, then end of file.
    Chunks of at most 1 MiB, as gunicorn reads a socket."""

    def __init__(self, data: bytearray):
        self.view, self.at = memoryview(data), 0

    def chunk(self, size_hint=None) -> bytes:
        size = max(8192, min(size_hint or 0, 2**20))
        out = bytes(self.view[self.at:self.at + size])
        self.at += len(out)
        return out

    @staticmethod
    def empty(size_hint=None) -> bytes:
        return b""

    def rest(self) -> bytes:
        out = bytes(self.view[self.at:])
        self.at += len(out)
        return out


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
    head = (f"HTTP/1.1 {status} {title(status)}\r\nConnection: close\r\n"
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

class Worker(ThreadWorker):
    """gthread's event loop reads each request whole before its one thread computes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = Settings()
        self.max_body = settings.max_body_bytes
        self.request_timeout = settings.request_timeout_s
        self.max_buffered = settings.max_buffered_bytes
        cfg = self.cfg
        # the longest head the parser would read before refusing it
        self.max_head = (cfg.limit_request_line + 2
                         + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4)
        self.reading: dict = {}  # conn -> deadline (idle: keepalive; started: request timeout)
        self.lingering: dict = {}  # conn -> deadline: refused, its unread bytes drained
        self.buffered = 0
        self.busy = 0  # requests handed to the thread and not finished

    # -- accepting only while idle

    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled and not self.busy)

    def _accept_again(self):
        self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)

    # -- reading (main thread)

    def enqueue_req(self, conn):
        """Every way in (a new connection, a kept-alive one readable again, bytes left after a
        request) starts reading the next request here instead of handing it to the thread."""
        conn.incoming = Incoming(self.max_body, self.max_head)
        conn.sent_continue = False
        conn.started = None  # when the request's first byte came
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        if leftover and self._feed(conn, leftover):
            return
        self.reading[conn] = self._deadline(conn)
        self.poller.register(conn.sock, 1, partial(self._readable, conn))

    def _deadline(self, conn) -> float:
        if conn.started is None:
            return time.monotonic() + (self.cfg.keepalive or 2)
        return conn.started + self.request_timeout

    def _readable(self, conn, _sock):
        data = _recv(conn.sock)
        if data is None:
            return
        if not data:  # the client went away
            self._stop_reading(conn)
            self.buffered -= len(conn.incoming.buf)
            self._close(conn)
            return
        first = conn.started is None
        if not self._feed(conn, data) and first:  # the request's timeout runs from now
            self.reading[conn] = self._deadline(conn)

    def _feed(self, conn, data: bytes) -> bool:
        """Add bytes; True once the connection has left the reading state."""
        incoming = conn.incoming
        if conn.started is None:
            conn.started = time.monotonic()
        self.buffered += len(data)
        if self.buffered > self.max_buffered:
            self.buffered -= len(incoming.buf) + len(data)
            self._refuse(conn, 429, "overloaded", "this worker holds too many request bytes "
                         "being uploaded; retry after Retry-After seconds")
            return True
        ready = incoming.feed(data)
        if incoming.refusal:
            self.buffered -= len(incoming.buf)
            self._refuse(conn, *incoming.refusal)
            return True
        if ready:
            self.buffered -= len(incoming.buf)
            self._dispatch(conn)
            return True
        if incoming.expects_continue and not conn.sent_continue:
            conn.sent_continue = True  # the client waits for it before sending the body
            self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    def _dispatch(self, conn):
        self._stop_reading(conn)
        conn.data_ready = True  # gthread must not wait for more bytes in the thread
        self.busy += 1
        self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.busy -= 1
        source = getattr(conn, "source", None)
        if source is not None:  # bytes read past the request (pipelined): the parser's, first
            rest = conn.parser.unreader.take_buffered() + source.rest()
            if rest:
                conn.parser.unreader.unread(rest)
            # an idle kept-alive connection must not hold its last (perhaps 256 MB) request
            conn.source = None
            conn.parser.unreader.chunk = _Memory.empty
        super().finish_request(conn, fs)
        self._accept_again()

    def _stop_reading(self, conn):
        self.reading.pop(conn, None)
        self._unregister(conn)

    def _unregister(self, conn):
        with contextlib.suppress(KeyError, ValueError, OSError):  # not registered, or closed
            self.poller.unregister(conn.sock)

    def _send(self, conn, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the client is gone: nothing to tell it
            conn.sock.send(data)  # small: fits the socket's buffer

    def _refuse(self, conn, status: int, code: str, detail: str):
        """Answer from here and close, draining what the client still sends for a while, so
        that it reads the answer instead of a reset."""
        self._stop_reading(conn)
        self._send(conn, problem_bytes(status, code, detail))
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER_S
        self.poller.register(conn.sock, 1, partial(self._drain, conn))

    def _drain(self, conn, _sock):
        if _recv(conn.sock) == b"":
            self._unlinger(conn)

    def _unlinger(self, conn):
        self.lingering.pop(conn, None)
        self._unregister(conn)
        self._close(conn)

    def _close(self, conn):
        self.nr_conns -= 1
        conn.close()
        self._accept_again()

    def murder_pending(self):
        """Also: close connections idle past keepalive, answer 408 to requests that took
        longer than request_timeout_s to arrive, end lingering. Runs about once a second."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.reading.items()):
            idle = conn.started is None
            if now < deadline and (self.alive or not idle):  # a stopping worker drops idle ones
                continue
            self._stop_reading(conn)
            self.buffered -= len(conn.incoming.buf)
            if not idle:
                self._refuse(conn, 408, "request_timeout", "the request did not arrive in "
                             f"full within {self.request_timeout:g} s (request_timeout_s)")
            else:
                self._close(conn)
        for conn, deadline in list(self.lingering.items()):
            if now >= deadline:
                self._unlinger(conn)

    # -- computing (the thread)

    def handle(self, conn):
        """Parse from memory: the thread never waits on a client."""
        conn.init()
        incoming, conn.incoming = conn.incoming, None
        conn.source = _Memory(incoming.buf)
        conn.parser.unreader.chunk = conn.source.chunk
        return super().handle(conn)

    def handle_request(self, req, conn):
        if conn.sent_continue:
            req._expected_100_continue = False  # the main loop has sent it
        return super().handle_request(req, conn)

    def handle_error(self, req, client, addr, exc):
        """A request gunicorn could not parse, as problem+json; anything else is a bug."""
        refused = parse_error(exc)
        if refused is None:
            log.exception("Error handling request")
            refused = 500, "internal", CODES["internal"][1]
        else:
            log.info("Invalid request from %s: %s", (addr or ("",))[0], exc)
        try:
            client.setblocking(True)
            client.sendall(problem_bytes(*refused))
        except OSError:
            log.debug("Failed to send the error")
