"""Client over HTTP against a scripted stub: retries, Retry-After, errors by status, the pool."""

from __future__ import annotations

import email.utils
import socket
import threading
import time

import numpy as np
import pytest

import client.errors as E
import client.session
from client import Client, Graph
from client.session import retry_after
from tests.client.stub_http import Answer, Stub


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The client's sleeps between attempts, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(client.session, "sleep", slept.append)
    return slept


def ok(value: float = 1.0) -> Answer:
    return Answer(200, {"outputs": {"y": {"shape": [], "dtype": "float32", "data": value}},
                        "gradients": {}, "warnings": [], "stats": {"nodes": 1}})


def problem(status: int, code: str) -> dict:
    return {"type": "about:blank", "title": "t", "status": status, "code": code,
            "detail": f"a {code}", "errors": [{"pointer": "/nodes/0", "detail": "here"}]}


def graph(value: float = 2.0):
    g = Graph()
    x = g.input("x", value)
    return (x * 3).named("y")


def test_429_with_retry_after_is_retried_after_that_many_seconds(stub, waits):
    stub.script = [Answer(429, problem(429, "overloaded"), {"Retry-After": "7"})] * 2 + [ok(5.0)]
    with Client(stub.url, retries=4) as c:
        r = c.evaluate(graph())
    assert float(r["y"]) == 5.0
    assert len(stub.seen) == 3
    assert waits == [7.0, 7.0]
    assert stub.seen[0].body == stub.seen[2].body  # the same request each time


def test_503_without_retry_after_backs_off_exponentially(stub, waits):
    stub.script = [Answer(503, problem(503, "not_ready"))] * 3 + [ok()]
    with Client(stub.url, retries=5, backoff=0.5) as c:
        c.evaluate(graph())
    assert len(stub.seen) == 4
    for k, w in enumerate(waits):  # jittered between half and all of backoff * 2**k
        assert 0.5 * 0.5 * 2**k <= w <= 0.5 * 2**k, waits


def test_overloaded_after_the_last_retry_raises_with_the_servers_body(stub, waits):
    body = problem(429, "overloaded")
    stub.script = [Answer(429, body, {"Retry-After": "1"})]
    with Client(stub.url, retries=2) as c, pytest.raises(E.OverloadedError) as err:
        c.evaluate(graph())
    assert len(stub.seen) == 3 and waits == [1.0, 1.0]
    assert (err.value.status, err.value.code, err.value.problem) == (429, "overloaded", body)
    assert err.value.retry_after == "1"


def test_a_retry_after_longer_than_max_wait_is_not_waited_for(stub, waits):
    stub.script = [Answer(429, problem(429, "overloaded"), {"Retry-After": "3600"}), ok()]
    with Client(stub.url, max_wait=60) as c, pytest.raises(E.OverloadedError):
        c.evaluate(graph())
    assert len(stub.seen) == 1 and waits == []


ERRORS = [  # status, code, class: none of them is retried
    (400, "malformed_json", E.BadRequestError),
    (401, "unauthorized", E.UnauthorizedError),
    (404, "not_found", E.BadRequestError),
    (413, "graph_too_large", E.TooLargeError),
    (415, "unsupported_media_type", E.BadRequestError),
    (422, "shape_mismatch", E.ValidationError),
    (500, "internal", E.ServerError),
    (502, "bad_gateway", E.ServerError),
    (504, "deadline_exceeded", E.DeadlineError),
]


@pytest.mark.parametrize(("status", "code", "cls"), ERRORS)
def test_an_error_answer_raises_its_class_once(stub, waits, status, code, cls):
    body = problem(status, code)
    stub.script = [Answer(status, body)]
    with Client(stub.url) as c, pytest.raises(cls) as err:
        c.evaluate(graph())
    assert len(stub.seen) == 1 and waits == []
    e = err.value
    assert isinstance(e, E.GradserveError)
    assert (e.status, e.code, e.problem, e.detail) == (status, code, body, f"a {code}")
    assert e.errors == [{"pointer": "/nodes/0", "detail": "here"}]
    assert e.response.status_code == status


def test_an_answer_that_is_not_problem_json_still_raises_by_status(stub):
    stub.script = [Answer(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"})]
    with Client(stub.url, retries=0) as c, pytest.raises(E.ServerError) as err:
        c.info()
    assert err.value.code == "http_502" and "bad gateway" in err.value.detail


def test_connection_refused_is_retried_then_raises_connect_error(waits):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retries=3) as c, \
            pytest.raises(E.ConnectError) as err:
        c.info()
    assert len(waits) == 3
    assert err.value.status is None and err.value.code == "connection_failed"
    assert isinstance(err.value, E.NetworkError)


def test_a_read_timeout_is_not_retried(stub, waits):
    release = threading.Event()
    stub.script = [lambda seen: (release.wait(10), ok())[1]]
    try:
        with Client(stub.url, timeout=0.2) as c, pytest.raises(E.ReadTimeoutError) as err:
            c.info()
    finally:
        release.set()
    assert err.value.code == "timeout" and len(stub.seen) == 1 and waits == []


def test_requests_carry_the_key_and_strict_json(stub):
    stub.script = [ok()]
    g = Graph()
    x = g.input("x", [1.0, np.nan, np.inf])
    with Client(stub.url + "/", api_key="s3cret") as c:
        c.evaluate(x.sum())
    seen = stub.seen[0]
    assert (seen.method, seen.path) == ("POST", "/v1/evaluate")
    assert seen.headers["Authorization"] == "Bearer s3cret"
    assert seen.headers["Content-Type"] == "application/json"
    assert b"NaN" in seen.body and b'"NaN"' in seen.body and b'"Infinity"' in seen.body
    assert seen.json()["inputs"]["x"]["data"] == [1.0, "NaN", "Infinity"]


def test_info_and_ops_are_gets(stub):
    stub.script = [Answer(200, {"name": "gradserve"}), Answer(200, {"ops": [{"name": "add"}]})]
    with Client(stub.url) as c:
        assert c.info() == {"name": "gradserve"}
        assert c.ops() == [{"name": "add"}]
    assert [(s.method, s.path) for s in stub.seen] == [("GET", "/v1"), ("GET", "/v1/ops")]


def test_evaluate_many_keeps_the_order_when_answers_come_back_out_of_order(stub):
    n, answered = 8, []
    last_done = threading.Event()

    def answer(seen):
        value = seen.json()["inputs"]["x"]["data"]
        if value == 0.0:  # the first request is answered last
            assert last_done.wait(10), "the other requests did not run concurrently"
        answered.append(value)
        if len(answered) == n - 1:
            last_done.set()
        return ok(value)

    stub.script = [answer]
    with Client(stub.url) as c:
        results = c.evaluate_many([graph(float(k)) for k in range(n)], concurrency=n)
    assert answered[-1] == 0.0
    assert [float(r["y"]) for r in results] == [float(k) for k in range(n)]


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("12") == 12.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after(later) <= 30
    assert retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
