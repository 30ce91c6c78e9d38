"""A scripted HTTP server on 127.0.0.1 for the SDK's transport tests (retries, errors, pool)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: object = field(default_factory=dict)  # JSON, or bytes as they are
    headers: dict = field(default_factory=dict)


class Stub:
    """Answers request k with script[k] (the last one repeats); an answer may be a function of
    the request. Every request is recorded in `seen`."""

    def __init__(self):
        self.script: list[Answer | Callable[[Seen], Answer]] = [Answer()]
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's names)
                self._answer()

            def do_POST(self):  # noqa: N802
                self._answer()

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, self.path, dict(self.headers), body)
                with stub._lock:
                    k = len(stub.seen)
                    stub.seen.append(seen)
                answer = stub.script[min(k, len(stub.script) - 1)]
                if callable(answer):
                    answer = answer(seen)
                raw = answer.body if isinstance(answer.body, bytes) else json.dumps(
                    answer.body).encode()
                self.send_response(answer.status)
                headers = {"Content-Type": "application/json", **answer.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                """Quiet: the test reads what the stub recorded, not its log."""

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up (the timeout test) is expected here
