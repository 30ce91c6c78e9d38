"""Two gunicorn instances, started as the Dockerfile's CMD starts one, behind a real nginx
running deploy/nginx.conf: the load reaches both, and stopping one with SIGTERM while
clients keep sending costs no request.

nginx is installed with apt-get when it is missing (CI runs as root on a clean machine).
Which instance answered a request is read from the instances' own JSON log lines, by the
X-Request-ID each request carries through nginx.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
LOSS = 0.7743165  # PROTOCOL.md §1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apt_get(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """nginx on PATH (or /usr/sbin), installed from Debian's packages if missing."""
    def find():
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")

    if not find():
        done = apt_get("install", "-y", "-q", "nginx")
        if done.returncode != 0:  # perhaps stale package lists
            apt_get("update", "-q")
            done = apt_get("install", "-y", "-q", "nginx")
        if done.returncode != 0 or not find():
            pytest.fail("nginx is needed and `apt-get install -y nginx` failed "
                        f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return find()


def nginx_config(tmp: Path, upstreams: list[int], port: int) -> Path:
    """deploy/nginx.conf with the loopback instances as its upstream servers, listening on
    `port`, logging under `tmp`; inside a minimal main config of our own."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()

    def servers(m: re.Match) -> str:
        options = " ".join(o for o in m[1].split() if o != "resolve")  # only names re-resolve
        return "\n    ".join(f"server 127.0.0.1:{p} {options};" for p in upstreams)

    log = f"access_log {tmp}/access.log gradserve;"
    for pattern, new in [(r"server\s+gradserve:8000\s+([^;]*);", servers),
                         (r"listen\s+80;", f"listen 127.0.0.1:{port};"),
                         (r"access_log\s+\S+\s+gradserve;", log)]:
        text, count = re.subn(pattern, new, text)
        assert count == 1, f"deploy/nginx.conf no longer has one {pattern!r}"
    (tmp / "gradserve.conf").write_text(text)
    temp_paths = "".join(f"{kind}_temp_path {tmp}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        # As root, workers would run as "nobody" and could not reach pytest's private tmp.
        ("user root;\n" if os.geteuid() == 0 else "")
        + "worker_processes 1;\nevents { worker_connections 512; }\n"
        + f"http {{\n{temp_paths}include {tmp}/gradserve.conf;\n}}\n")
    return main


class Nginx:
    def __init__(self, binary: str, tmp: Path, upstreams: list[int]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        conf = nginx_config(tmp, upstreams, self.port)
        self.proc = subprocess.Popen(
            [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log"),
             "-g", f"daemon off; pid {tmp}/nginx.pid;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}:\n{self.errors()}")
            with contextlib.suppress(requests.ConnectionError):  # not listening yet
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"nginx did not answer:\n{self.errors()}")
            time.sleep(0.1)

    def errors(self) -> str:
        log = self.tmp / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def access_log(self) -> list[dict]:
        return [orjson.loads(line) for line in (self.tmp / "access.log").read_text().splitlines()]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)  # graceful
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def cluster(nginx_binary, start_server, tmp_path) -> Iterator[tuple]:
    a, b = start_server(), start_server()
    balancer = Nginx(nginx_binary, tmp_path, [a.port, b.port])
    yield balancer, a, b
    balancer.stop()


def answered(server) -> set[str]:
    """The request ids this instance's workers answered (its JSON log lines)."""
    lines = (orjson.loads(line) for line in server.output().splitlines()
             if line.startswith("{"))
    return {line["request_id"] for line in lines if line.get("logger") == "gradserve.request"}


def call(url: str, body: bytes, rid: str) -> str | None:
    """None when the §1 example came back right with its id, else what went wrong."""
    try:
        r = requests.post(url + "/v1/evaluate", data=body, timeout=60,
                          headers={"Content-Type": "application/json", "X-Request-ID": rid})
    except requests.RequestException as e:
        return f"{rid}: {e!r}"
    if r.status_code != 200 or r.headers.get("X-Request-ID") != rid:
        return f"{rid}: {r.status_code} {r.headers.get('X-Request-ID')} {r.text[:200]}"
    if not np.isclose(r.json()["outputs"]["loss"]["data"], LOSS, rtol=1e-6):
        return f"{rid}: wrong loss {r.json()['outputs']['loss']}"
    return None


def test_requests_through_nginx_all_succeed_and_reach_both_instances(cluster, example):
    balancer, a, b = cluster
    body = orjson.dumps(example)
    ids = [f"spread-{i}" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        failures = [f for f in pool.map(lambda rid: call(balancer.url, body, rid), ids) if f]
    assert failures == []
    on_a, on_b = answered(a) & set(ids), answered(b) & set(ids)
    assert on_a | on_b == set(ids) and not on_a & on_b  # each answered once, by one
    assert min(len(on_a), len(on_b)) >= len(ids) // 4  # round robin: about half each

    # Without an X-Request-ID, nginx makes one; the instance logs and echoes that same id.
    r = requests.get(balancer.url + "/v1", timeout=30)
    rid = r.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert rid in answered(a) | answered(b)
    # nginx writes its access line after the response has left: wait for it a little
    end = time.monotonic() + 10
    while rid not in {line["request_id"] for line in balancer.access_log()}:
        assert time.monotonic() < end, f"{rid} is not in nginx's access log"
        time.sleep(0.1)


def test_an_instance_stopped_with_sigterm_mid_stream_costs_no_request(cluster, example):
    balancer, a, b = cluster
    body = orjson.dumps(example)
    lock = threading.Lock()
    sent: list[str] = []
    sent_after_a: list[str] = []  # started once a had exited: b's alone to answer
    failures: list[str] = []
    a_gone, stop_sending = threading.Event(), threading.Event()

    def client(k: int) -> None:
        i = 0
        while not stop_sending.is_set():
            rid = f"stream-{k}-{i}"
            i += 1
            late = a_gone.is_set()
            failure = call(balancer.url, body, rid)
            with lock:
                sent.append(rid)
                if late:
                    sent_after_a.append(rid)
                if failure:
                    failures.append(failure)

    def wait_for_answers(answers: list[str], count: int) -> None:
        end = time.monotonic() + 120
        while len(answers) < count:
            assert time.monotonic() < end and not failures, failures or "too slow"
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for_answers(sent, 60)
        assert a.stop(signal.SIGTERM) == 0  # returns once gunicorn has exited, cleanly
        a_gone.set()
        wait_for_answers(sent_after_a, 60)  # the stream goes on with one instance
    finally:
        stop_sending.set()
        for t in threads:
            t.join(120)
    assert failures == []
    served_a, served_b = answered(a) & set(sent), answered(b) & set(sent)
    assert served_a and served_b  # a was serving until it stopped
    assert served_a | served_b == set(sent)
    assert set(sent_after_a) <= served_b


def test_idle_and_trickling_clients_through_nginx_delay_no_request(cluster, example):
    """20 connections to nginx, half silent, half sending a head byte by byte: nginx reads
    them (and buffers bodies) before a replica sees anything; valid requests stay fast."""
    balancer, a, b = cluster
    port = int(balancer.url.rpartition(":")[2])
    head = b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    trickling = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    body = orjson.dumps(example)
    try:
        times = []
        for k in range(10):
            for s in trickling:
                s.send(head[k:k + 1])
            t0 = time.perf_counter()
            assert call(balancer.url, body, f"slow-{k}") is None
            times.append(time.perf_counter() - t0)
            time.sleep(0.1)
        assert max(times) < 1.0, times
    finally:
        for s in silent + trickling:
            s.close()
