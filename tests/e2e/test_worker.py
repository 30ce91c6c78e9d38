"""gunicorn with gradserve's worker (service/worker.py), over raw sockets: what gunicorn
answers itself is problem+json, never HTML and never a 5xx; chunked bodies are read whole or
refused; connections are kept alive; idle and trickling clients delay nobody (issue 15,
hardening v2 item 1; issue 14, keep-alive).
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import orjson
import pytest
import requests

from tests.conftest import EXAMPLE, GUNICORN, ROOT, Server, free_port
from tests.e2e.test_overload import chain
from tests.e2e.test_overload import post as post_json
from tests.e2e.test_server import workers

LIMIT = 4096  # max_body_bytes of the server below
JSON = b"Content-Type: application/json\r\n"
LOSS = 0.7743165  # PROTOCOL.md §1


@pytest.fixture(scope="module")
def server():
    with Server(max_body_bytes=LIMIT, request_timeout_s=1.5) as s:
        yield s


def exchange(server, data: bytes, wait: float = 10, until_close: bool = False) -> bytes:
    """Send raw bytes, read one answer (or all of them, until the server closes)."""
    c = socket.create_connection(("127.0.0.1", server.port), timeout=wait)
    c.sendall(data)
    return read_answer(c, until_close)


def read_answer(sock: socket.socket, until_close: bool = False) -> bytes:
    """One answer (or all of them, until the server closes) from a connection already sent
    to; the connection is closed after."""
    out = b""
    with sock, contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
            if _complete(out) and not until_close:
                break
    return out


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def answer(raw: bytes) -> tuple[int, dict, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body) if body else {}


def chunked(body: bytes, size: int = 100) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def post(path: bytes = b"/v1/evaluate", headers: bytes = JSON) -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers


CHUNKED = post(headers=JSON + b"Transfer-Encoding: chunked\r\n") + b"\r\n"
BODY = orjson.dumps(EXAMPLE)

# name, raw request, status, code
RAW = [
    ("header field of 9,000 bytes", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
     + b"a" * 9000 + b"\r\n\r\n", 431, "header_too_large"),
    ("101 header fields", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431, "header_too_large"),
    ("request line of 9,000 bytes", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414, "uri_too_long"),
    ("request line of garbage", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("method with an @", b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ("header without a colon", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
    ("two Content-Lengths", post(headers=JSON + b"Content-Length: 2\r\nContent-Length: 3\r\n")
     + b"\r\n{}", 400, "bad_request"),
    ("Transfer-Encoding gzip", post(headers=JSON + b"Transfer-Encoding: gzip\r\n") + b"\r\n",
     400, "bad_request"),
    ("chunk size zz", CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunk size negative", CHUNKED + b"-2\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    ("bad chunk extension", CHUNKED + b"2;a\x01b\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunk terminator missing", CHUNKED + b"2\r\n{}XX0\r\n\r\n", 400, "bad_request"),
    ("chunked body past max_body_bytes", CHUNKED + chunked(b"[" + b"1," * LIMIT + b"1]"),
     413, "body_too_large"),
    ("Content-Length past max_body_bytes", post(headers=JSON + b"Content-Length: %d\r\n"
                                                % (10 * 2**30)) + b"\r\n{", 413,
     "body_too_large"),
    ("//v1//evaluate, foreign Host", b"POST //v1//evaluate HTTP/1.1\r\nHost: evil.example\r\n"
     + JSON + b"Content-Length: 2\r\n\r\n{}", 404, "not_found"),
]


@pytest.mark.parametrize(("raw", "status", "code"), [r[1:] for r in RAW],
                         ids=[r[0] for r in RAW])
def test_what_gunicorn_refuses_is_problem_json(server, raw, status, code):
    got, headers, problem = answer(exchange(server, raw))
    assert (got, problem.get("code")) == (status, code), problem
    assert headers["content-type"] == "application/problem+json"
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert "location" not in headers
    r = requests.post(server.url + "/v1/evaluate", data=BODY, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and abs(r.json()["outputs"]["loss"]["data"] - LOSS) < 1e-6
    assert "Traceback" not in server.output() and "WORKER TIMEOUT" not in server.output()
    assert any(line.get("status") == status and line.get("code") == code
               for line in request_lines(server)), "the refusal has no log line"


def request_lines(server) -> list[dict]:
    """The JSON request log lines the server has written so far."""
    lines = []
    for text in server.output().splitlines():
        if text.startswith("{") and '"logger":"gradserve.request"' in text:
            lines.append(orjson.loads(text))
    return lines


@pytest.mark.parametrize("size", [1, 7, 100, 4000])
def test_a_chunked_body_within_the_limit_is_read_whole(server, size):
    status, _, body = answer(exchange(server, CHUNKED + chunked(BODY, size)))
    assert status == 200 and abs(body["outputs"]["loss"]["data"] - LOSS) < 1e-6


def test_connections_are_kept_alive_and_pipelined_requests_answered(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.connect()
    sock = conn.sock
    for _ in range(5):
        conn.request("POST", "/v1/evaluate", BODY, {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and not r.will_close
        r.read()
        assert conn.sock is sock  # the same TCP connection every time
    conn.close()
    one = post(headers=JSON + b"Content-Length: %d\r\n" % len(BODY)) + b"\r\n" + BODY
    raw = exchange(server, one * 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close"
                   b"\r\n\r\n", until_close=True)
    assert raw.count(b"HTTP/1.1 200 ") == 4


def test_idle_and_trickling_clients_delay_no_request(server):
    """20 connections, half silent, half sending a head one byte at a time: a valid request
    still takes well under a second (v1: 62 s, then workers killed)."""
    head = post(headers=JSON + b"Content-Length: 2\r\n") + b"\r\n{}"
    stop = threading.Event()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    trickling = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]

    def trickle():
        for k in range(len(head)):
            if stop.wait(0.1):
                return
            for s in trickling:
                with contextlib.suppress(OSError):
                    s.send(head[k:k + 1])

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        time.sleep(0.3)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            r = requests.post(server.url + "/v1/evaluate", data=BODY, timeout=30,
                              headers={"Content-Type": "application/json"})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        assert max(times) < 1.0, times
        time.sleep(1.6)  # past request_timeout_s: the tricklers are told so
        status, _, problem = answer(trickling[0].recv(65536))
        assert (status, problem["code"]) == (408, "request_timeout")
    finally:
        stop.set()
        feeder.join()
        for s in silent + trickling:
            s.close()


def test_bytes_that_come_during_a_long_computation_are_read_before_any_timeout():
    """One worker computes ~6 s; meanwhile a request started before it (its first byte read)
    arrives in full, past request_timeout_s. It is read when the computation ends and
    answered 200, not 408; a kept-alive connection past its keepalive is not closed under a
    request that came meanwhile either."""
    one = post(headers=JSON + b"Content-Length: %d\r\n" % len(BODY)) + b"\r\n" + BODY
    with Server(workers=1, request_timeout_s=1.0) as server:
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        idle.request("POST", "/v1/evaluate", BODY, {"Content-Type": "application/json"})
        assert idle.getresponse().read() and idle.sock is not None
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        slow.sendall(one[:1])
        time.sleep(0.3)  # the worker has read the first byte: the request's clock runs
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(post_json, server.url, chain(750))  # ~6 s: past keepalive (5 s)
            time.sleep(0.5)  # the long one is being computed
            slow.sendall(one[1:])
            idle.request("POST", "/v1/evaluate", BODY, {"Content-Type": "application/json"})
            assert long.result().status_code == 200
        status, _, body = answer(read_answer(slow))
        assert status == 200 and abs(body["outputs"]["loss"]["data"] - LOSS) < 1e-6
        r = idle.getresponse()
        assert r.status == 200 and abs(orjson.loads(r.read())["outputs"]["loss"]["data"]
                                       - LOSS) < 1e-6



@pytest.mark.parametrize("app", ["small", "large"])
def test_a_body_that_fails_midway_is_a_500(app, tmp_path):
    """Nothing of a response leaves before it is complete, so a body that fails after its
    first part (of 7 bytes, or of 300 KB) becomes a problem+json 500, not a cut answer."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([GUNICORN[0], "-k", "service.worker.Worker", "-w", "1", "-b",
                                 f"127.0.0.1:{port}", f"tests.e2e.broken_app:{app}"],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        raw = b""
        for _ in range(100):
            with contextlib.suppress(ConnectionRefusedError):
                raw = exchange(SimpleNamespace(port=port),
                               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", until_close=True)
                break
            time.sleep(0.1)
        status, headers, problem = answer(raw)
        assert (status, problem["code"]) == (500, "internal")
        assert headers["content-type"] == "application/problem+json"
        assert b"partial" not in raw and b"xxx" not in raw
        assert "the body broke" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


# ---- connections over the workers, over their life, and at a stop -------------------------

def pids_by_request_id(server) -> dict[str, int]:
    return {line["request_id"]: line["pid"] for line in request_lines(server)
            if "request_id" in line}


def test_connections_opened_at_once_are_spread_over_the_workers():
    """Eight connections opened together: each worker takes some (one worker used to take all
    eight and keep them, the other idling, when a client opened its pool at once)."""
    with Server() as server:
        end = time.monotonic() + 30
        while len(workers(server.proc.pid)) < 2 and time.monotonic() < end:
            time.sleep(0.01)  # ready means one worker answered; the other may still be forking
        time.sleep(0.5)  # and then entering its loop
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                 for _ in range(8)]
        time.sleep(0.2)  # every connection accepted by a worker
        for k, s in enumerate(socks):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: conn-%d\r\n\r\n" % k)
        for s in socks:
            assert answer(read_answer(s))[0] == 200
        pids = pids_by_request_id(server)
        held = [sum(pids[f"conn-{k}"] == pid for k in range(8)) for pid in set(pids.values())]
        assert len(held) == 2 and min(held) >= 2, held


def test_a_connection_closes_after_1000_requests():
    """As nginx's keepalive_requests: the client reconnects, to the worker holding fewest."""
    with Server(workers=1) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for k in range(1, 1001):
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            assert r.status == 200 and r.will_close == (k == 1000), k
        conn.close()


def test_a_stopping_worker_answers_what_its_idle_connections_send():
    """After SIGTERM, a request on a kept-alive connection is answered (Connection: close)
    instead of meeting a closed socket; then the server stops."""
    server = Server(workers=1).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/evaluate", BODY, {"Content-Type": "application/json"})
        assert conn.getresponse().read()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.6)  # the worker is stopping, past when it used to close idle connections
        conn.request("POST", "/v1/evaluate", BODY, {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.will_close
        assert abs(orjson.loads(r.read())["outputs"]["loss"]["data"] - LOSS) < 1e-6
        assert server.proc.wait(30) == 0
    finally:
        server.stop()



def test_a_client_that_does_not_read_its_answer_holds_no_worker():
    """One worker; a client asks for a 16 MB answer and never reads it. Another client's
    request is still answered at once (the worker used to block on the first for up to
    request_timeout_s), and the unread answer's connection is dropped at that timeout."""
    big = orjson.dumps({"inputs": {"x": {"data": [0.5]}},
                        "nodes": [{"id": "y", "op": "broadcast_to", "args": ["x"],
                                   "attrs": {"shape": [4_000_000]}}], "outputs": ["y"]})
    with Server(workers=1, request_timeout_s=3) as server:
        hoarder = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        hoarder.sendall(post(headers=JSON + b"Content-Length: %d\r\n" % len(big)) + b"\r\n"
                        + big)
        time.sleep(1.0)  # computed, and its answer stuck in the socket
        t0 = time.perf_counter()
        r = requests.post(server.url + "/v1/evaluate", data=BODY, timeout=30,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        time.sleep(3.0)  # past request_timeout_s: the connection is closed under it
        got = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := hoarder.recv(2**20):
                got += len(chunk)
        hoarder.close()
        assert 0 < got < 16_000_000
