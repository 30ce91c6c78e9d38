"""service/worker.py's framing: when the bytes read so far hold a whole request (then the
thread parses it from memory), or must go to the parser now (malformed or too long: it names
the fault), or are refused from the worker (a body past max_body_bytes). Fed one byte at a
time and all at once, the answer comes at the same byte."""

import pytest

from service.worker import Incoming

HEAD = b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

# name, bytes, how many of them must arrive before `feed` says ready (ALL: every one; None:
# never), refused with
ALL = -1
CASES = [
    ("GET, no body", b"GET /v1 HTTP/1.1\r\nHost: x\r\n\r\n", ALL, None),
    ("Content-Length 2", HEAD + b"Content-Length: 2\r\n\r\n{}", ALL, None),
    ("pipelined", HEAD + b"Content-Length: 2\r\n\r\n{}GET /v1 HTTP/1.1\r\n", len(HEAD) + 23,
     None),
    ("Content-Length, body short", HEAD + b"Content-Length: 3\r\n\r\n{}", None, None),
    ("Content-Length past the limit", HEAD + b"Content-Length: 1001\r\n\r\n", ALL, 413),
    ("Content-Length not a number", HEAD + b"Content-Length: 1e3\r\n\r\n", ALL, None),
    ("chunked", CHUNKED + b"2\r\n{}\r\n0\r\n\r\n", ALL, None),
    ("chunked with an extension and a trailer", CHUNKED + b"2;x=1\r\n{}\r\n0\r\nT: 1\r\n\r\n",
     ALL, None),
    ("chunked, last chunk missing", CHUNKED + b"2\r\n{}\r\n", None, None),
    ("chunked past the limit", CHUNKED + b"3e9\r\n{", len(CHUNKED) + 5, 413),
    ("chunk size zz", CHUNKED + b"zz\r\n", ALL, None),
    ("chunk terminator missing", CHUNKED + b"2\r\n{}XX", ALL, None),
    ("Transfer-Encoding gzip", HEAD + b"Transfer-Encoding: gzip\r\n\r\n", ALL, None),
    ("a head past max_head", b"GET /" + b"a" * 3000, 2049, None),
]


def arrive(data: bytes, step: int) -> tuple[int | None, Incoming]:
    incoming = Incoming(max_body=1000, max_head=2048)
    for at in range(0, len(data), step):
        if incoming.feed(data[at:at + step]):
            return min(at + step, len(data)), incoming
    return None, incoming


@pytest.mark.parametrize(("data", "ready_at", "refused"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_ready_at_the_right_byte(data, ready_at, refused):
    ready_at = len(data) if ready_at == ALL else ready_at
    got, incoming = arrive(data, 1)
    assert got == ready_at
    assert (incoming.refusal or (None,))[0] == refused
    whole, _ = arrive(data, len(data))
    assert whole == (None if ready_at is None else len(data))  # all at once: ready or not


def test_expect_100_continue_is_seen_before_the_body():
    incoming = Incoming(max_body=1000, max_head=2048)
    assert not incoming.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert incoming.expects_continue
    assert incoming.feed(b"{}")
