"""Under load and past deadlines, a real gunicorn answers fast and honestly: 429 overloaded
with Retry-After when its queue is past max_queue, 504 deadline_exceeded when a graph runs
too long; never a 5xx otherwise, never a dead worker."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from service import shedding
from service.errors import ApiError

SIDE = 1000  # the chain runs on a SIDE x SIDE tensor made from two vectors by broadcasting


def chain(n: int) -> dict:
    """sum(sin(sin(...sin(c + r)))) with n sines: about 8 ms each in float64 on one core."""
    nodes = [{"id": "s0", "op": "add", "args": ["c", "r"]}]
    nodes += [{"id": f"s{i}", "op": "sin", "args": [f"s{i - 1}"]} for i in range(1, n + 1)]
    nodes.append({"id": "out", "op": "sum", "args": [f"s{n}"]})
    return {"inputs": {"c": {"shape": [SIDE, 1], "data": [0.5] * SIDE},
                       "r": {"shape": [1, SIDE], "data": [0.25] * SIDE}},
            "nodes": nodes, "outputs": ["out"], "dtype": "float64"}


def chain_value(n: int) -> float:
    x = np.full((SIDE, SIDE), 0.75)
    for _ in range(n):
        x = np.sin(x)
    return float(x.sum())


def post(url: str, body: dict) -> requests.Response:
    return requests.post(url + "/v1/evaluate", json=body, timeout=120)


def test_a_full_queue_gets_429_with_retry_after_and_nothing_else_fails(start_server, example):
    server = start_server(workers=1, max_queue=2)
    body = chain(35)  # about 0.3 s: forty of them queue up behind one worker
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: post(server.url, body), range(40)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    shed = [r for r in answers if r.status_code == 429]
    assert shed, "forty requests behind one worker and max_queue=2, and none was shed"
    for r in shed:
        assert r.headers["Retry-After"] == "1"
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["code"] == "overloaded"
    for r in answers:
        if r.status_code == 200:
            assert np.isclose(r.json()["outputs"]["out"]["data"], chain_value(35))
    # once the flood is over, the queue is empty and work is taken again
    assert post(server.url, example).status_code == 200
    assert "Booting worker" in server.output() and server.output().count("Booting worker") == 1


def test_the_deadline_gives_504_and_the_worker_serves_on(start_server, example):
    server = start_server(deadline_s=0.05, workers=1)
    r = post(server.url, chain(400))  # seconds of work against a 50 ms deadline
    assert r.status_code == 504, r.text[:300]
    assert r.json()["code"] == "deadline_exceeded"
    assert r.headers["Content-Type"] == "application/problem+json"
    fine = post(server.url, example)
    assert fine.status_code == 200
    assert np.isclose(fine.json()["outputs"]["loss"]["data"], 0.7743165)
    assert server.output().count("Booting worker") == 1


def test_shedding_is_off_when_max_queue_is_0(start_server):
    server = start_server(workers=1, max_queue=0)
    body = chain(10)
    with ThreadPoolExecutor(10) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: post(server.url, body), range(10))]
    assert statuses == [200] * 10


def test_the_accept_queue_is_read_from_the_listening_socket():
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        assert shedding.queued([listener]) == 0
        shedding.check([listener], max_queue=2)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        try:
            for _ in range(200):  # the handshakes complete in the kernel, not here
                if shedding.queued([listener]) == 3:
                    break
                time.sleep(0.01)
            assert shedding.queued([listener]) == 3
            with pytest.raises(ApiError) as e:
                shedding.check([listener], max_queue=2)
            assert (e.value.status, e.value.code) == (429, "overloaded")
            assert e.value.headers == {"Retry-After": "1"}
            shedding.check([listener], max_queue=3)
            shedding.check([listener], max_queue=0)  # off
            listener.accept()[0].close()
            assert shedding.queued([listener]) == 2
        finally:
            for c in clients:
                c.close()
    assert shedding.queued([]) is None  # the Flask test client: no listener, no shedding
