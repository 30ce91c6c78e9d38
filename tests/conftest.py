"""Fixtures shared by every test package: a real gunicorn, started as `make serve` does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [str(Path(sys.executable).parent / "gunicorn"),
            "--config", "service/gunicorn.conf.py", "service.wsgi:app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn on a free loopback port, with GRADSERVE_* settings; stopped with SIGTERM."""

    def __init__(self, port: int | None = None, **settings):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
        env.update({"GRADSERVE_BIND": f"127.0.0.1:{self.port}", "GRADSERVE_WORKERS": "2"})
        env.update({f"GRADSERVE_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = ROOT / ".pytest_cache" / f"gunicorn-{self.port}.log"

    def start(self, timeout: float = 30) -> Server:
        self.log.parent.mkdir(exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(GUNICORN, cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def server():
    """One default gunicorn (2 workers) for the whole session."""
    with Server() as s:
        yield s


@pytest.fixture
def start_server():
    """Start gunicorns with custom settings: start_server(api_keys="k"); stopped after the test."""
    started = []

    def start(**settings) -> Server:
        s = Server(**settings).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


EXAMPLE = {  # PROTOCOL.md §1, exactly as written there
    "inputs": {
        "x": {"data": [[1, 2], [3, 4]]},
        "w": {"data": [[0.5], [-0.25]], "requires_grad": True},
        "b": {"shape": [1], "dtype": "float32", "b64": "AACAPw=="},
    },
    "nodes": [
        {"id": "h", "op": "matmul", "args": ["x", "w"]},
        {"id": "z", "op": "add", "args": ["h", "b"]},
        {"id": "a", "op": "sigmoid", "args": ["z"]},
        {"id": "loss", "op": "mean", "args": ["a"]},
    ],
    "outputs": ["loss", "a"],
    "grad": {"of": "loss", "wrt": ["w", "b"]},
    "dtype": "float32",
    "encoding": "nested",
}


@pytest.fixture
def example() -> dict:
    """A fresh copy of the PROTOCOL.md §1 request body."""
    import copy
    return copy.deepcopy(EXAMPLE)
