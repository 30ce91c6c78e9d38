"""A real gunicorn, started as `make serve` does (2 workers): the wire contract end to end."""

from __future__ import annotations

import base64
import os
import signal
import threading
import time

import numpy as np
import pytest
import requests
from openapi_spec_validator import validate as validate_spec

from autograd import OPS

TIMEOUT = 60


def post(server, body, **kw) -> requests.Response:
    return requests.post(server.url + "/v1/evaluate", json=body, timeout=TIMEOUT, **kw)


def array(t: dict) -> np.ndarray:
    if "b64" in t:
        kind = {"float32": "<f4", "float64": "<f8"}[t["dtype"]]
        return np.frombuffer(base64.b64decode(t["b64"]), kind).reshape(t["shape"])
    return np.asarray(t["data"], t["dtype"]).reshape(t["shape"])


def test_the_protocol_example(server, example):
    r = post(server, example)
    assert r.status_code == 200, r.text
    body = r.json()
    page = {  # PROTOCOL.md §1's response, rounded there to 7 decimals
        ("outputs", "loss"): 0.7743165, ("outputs", "a"): [[0.7310586], [0.8175744]],
        ("gradients", "w"): [[0.3220257], [0.4949049]], ("gradients", "b"): [0.1728792],
    }
    for (part, name), values in page.items():
        t = body[part][name]
        assert t["dtype"] == "float32" and t["shape"] == list(np.shape(values))
        np.testing.assert_allclose(array(t), values, rtol=0, atol=1.5e-7)
    assert body["warnings"] == [] and body["stats"]["nodes"] == 4


def test_a_10000_node_chain(server):
    """x -> sin -> sin -> ... (9,999 times) -> sum, in float64, against NumPy."""
    x = np.array([0.5, 1.0, -1.5, 3.0])
    n = 9_999
    nodes = [{"id": f"s{i}", "op": "sin", "args": [f"s{i - 1}" if i else "x"]} for i in range(n)]
    nodes.append({"id": "loss", "op": "sum", "args": [f"s{n - 1}"]})
    body = {"inputs": {"x": {"data": x.tolist(), "requires_grad": True}}, "nodes": nodes,
            "grad": {"of": "loss"}, "dtype": "float64"}
    value, grad = x.copy(), np.ones_like(x)
    for _ in range(n):
        grad *= np.cos(value)
        value = np.sin(value)
    r = post(server, body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert list(got["outputs"]) == ["loss"] and got["stats"]["nodes"] == n + 1
    np.testing.assert_allclose(got["outputs"]["loss"]["data"], value.sum(), rtol=1e-9)
    np.testing.assert_allclose(array(got["gradients"]["x"]), grad, rtol=1e-9)


def test_probes(server):
    r = requests.get(server.url + "/healthz", timeout=TIMEOUT)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = requests.get(server.url + "/readyz", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["status"]


def test_info_and_ops(server):
    info = requests.get(server.url + "/v1", timeout=TIMEOUT).json()
    assert info["name"] == "gradserve" and info["dtypes"] == ["float32", "float64"]
    for key in ("max_body_bytes", "max_nodes", "max_elements", "max_total_bytes", "max_flops"):
        assert info["limits"][key] > 0
    ops = requests.get(server.url + "/v1/ops", timeout=TIMEOUT).json()["ops"]
    assert {o["name"]: o["arity"] for o in ops} == {n: op.arity for n, op in OPS.items()}


def test_openapi_document_validates(server):
    r = requests.get(server.url + "/openapi.json", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    validate_spec(doc)
    assert {"/v1/evaluate", "/v1", "/v1/ops", "/openapi.json", "/healthz", "/readyz"} <= set(
        doc["paths"])


def test_errors_are_problems_over_the_wire(server, example):
    example["nodes"][0]["op"] = "frobnicate"
    r = post(server, example)
    assert (r.status_code, r.headers["Content-Type"]) == (422, "application/problem+json")
    assert r.json()["code"] == "unknown_op"
    r = requests.post(server.url + "/v1/evaluate", data=b'{"inputs": NaN}', timeout=TIMEOUT,
                      headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "malformed_json")


def test_api_keys(start_server, example):
    keyed = start_server(api_keys="k1,k2")
    assert post(keyed, example).status_code == 401
    r = post(keyed, example, headers={"Authorization": "Bearer k3"})
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
    for key in ("k1", "k2"):
        r = post(keyed, example, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
    for path in ("/healthz", "/readyz"):
        assert requests.get(keyed.url + path, timeout=TIMEOUT).status_code == 200


# ---- SIGTERM while a request is being computed -------------------------------------------

def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def workers(master: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == master:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def slow_body(n: int = 200) -> dict:
    """About a second of one core: n matmuls of 512 x 512 whose values stay exactly 1."""
    ones = np.ones((512, 512), "<f4")
    w = np.full((512, 512), 1 / 512, "<f4")
    tensor = {"shape": [512, 512], "dtype": "float32"}
    nodes = [{"id": f"m{i}", "op": "matmul", "args": [f"m{i - 1}" if i else "x", "w"]}
             for i in range(n)]
    return {"inputs": {"x": dict(tensor, b64=base64.b64encode(ones).decode()),
                       "w": dict(tensor, b64=base64.b64encode(w).decode())},
            "nodes": nodes, "encoding": "base64"}


def test_sigterm_finishes_the_request_in_flight(start_server):
    s = start_server()
    master = s.proc.pid
    end = time.monotonic() + TIMEOUT
    while len(pids := workers(master)) < 2 and time.monotonic() < end:
        time.sleep(0.01)  # ready means one worker answered; the other may still be forking
    assert len(pids) == 2
    before = {pid: cpu_ticks(pid) for pid in pids}
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=post(s, slow_body())))
    thread.start()
    # Wait until a worker has spent a fifth of a second of CPU on it: the request is in flight.
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and thread.is_alive():
        if any(cpu_ticks(pid) - before[pid] >= tick // 5 for pid in pids):
            break
        time.sleep(0.01)
    assert thread.is_alive(), "the request finished before SIGTERM could be sent"
    os.kill(master, signal.SIGTERM)
    thread.join(TIMEOUT)
    r = result["r"]
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]["m199"]
    assert out["shape"] == [512, 512] and np.all(array(out) == 1)
    assert s.proc.wait(TIMEOUT) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/healthz", timeout=5)
