"""Models over other protocols: gradserve against the umbridge package's own server.

    python bench/interop.py            # about 40 s
    python bench/interop.py --quick    # about 15 s

(a) A UM-Bridge Gradient call on the banana posterior (models/banana.json): gradserve's
    /umbridge (gunicorn, 2 workers) against `umbridge.serve_models` (aiohttp) serving the
    same posterior written by hand in NumPy with 2 model threads; req/s under the same load.
(b) The banana model evaluated with its gradient as POST /v1/models/banana/evaluate against
    POST /v1/evaluate of the same graph (plan cached): req/s, and the bytes each sends.
Load: bench/http.py's (wrk when installed, else a multi-process Python client), alternating
servers, medians over rounds; traffic goes to 127.0.0.1 only. Issue 12's targets are
printed as PASS/MISS.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402

from bench.engine import table, verdict  # noqa: E402
from bench.http import (  # noqa: E402
    Gunicorn,
    free_port,
    python_load,
    throughput,
    wrk_load,
    wrk_present,
)

# The banana posterior of models/banana.json, by hand, served by UM-Bridge's own server.
UMBRIDGE_SERVER = '''
import sys
import numpy as np
import umbridge

class Banana(umbridge.Model):
    def __init__(self):
        super().__init__("banana")
    def get_input_sizes(self, config):
        return [2]
    def get_output_sizes(self, config):
        return [1]
    def __call__(self, parameters, config):
        x, y = parameters[0]
        return [[-((1 - x) ** 2 + 100 * (y - x * x) ** 2) / 20]]
    def gradient(self, out_wrt, in_wrt, parameters, sens, config):
        x, y = parameters[0]
        g = np.array([(2 * (1 - x) + 400 * x * (y - x * x)) / 20, -200 * (y - x * x) / 20])
        return (sens[0] * g).tolist()
    def supports_evaluate(self):
        return True
    def supports_gradient(self):
        return True

umbridge.serve_models([Banana()], int(sys.argv[1]), max_workers=2)
'''

GRADIENT = {"name": "banana", "input": [[0.5, 0.5]], "outWrt": 0, "inWrt": 0, "sens": [1.0]}


class UmbridgeServer:
    """UM-Bridge's aiohttp server on a free loopback port, in its own process."""

    def __init__(self, logdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/Gradient"
        self.log = logdir / "umbridge.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", UMBRIDGE_SERVER, str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def ready(self, body: bytes, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                sys.exit(f"umbridge's server exited:\n{self.log.read_text()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.post(self.url, data=body, timeout=10).status_code == 200:
                    return
            time.sleep(0.2)
        sys.exit("umbridge's server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def report(title: str, res: dict, baseline: str, labels: dict) -> list[str]:
    base = res[baseline]["rps"]
    rows = [(labels[k], f"{r['rps']:,.0f}", f"{r['p50'] * 1e3:.2f}", f"{r['p99'] * 1e3:.2f}",
             f"{r['rps'] / base:.2f}", str(r["errors"])) for k, r in res.items()]
    return [title, table(("server", "req/s", "p50 ms", "p99 ms", "x base", "errors"), rows,
                         (40, 9, 9, 9, 8, 8))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round per server")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    args = ap.parse_args()
    seconds, rounds = (2, 1) if args.quick else (3, 3)
    use_wrk = args.load != "python" and wrk_present(args.load != "python")
    load = wrk_load if use_wrk else python_load
    banana = json.loads((Path(ROOT) / "models" / "banana.json").read_text())
    t0 = time.monotonic()
    print(f"gradserve interop bench, {time.strftime('%Y-%m-%d %H:%M')}; load: "
          f"{'wrk -t1' if use_wrk else 'multi-process Python client'}, {rounds} round(s) of "
          f"{seconds} s per server, alternating; medians", flush=True)
    with tempfile.TemporaryDirectory(prefix="gradserve-interop-") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        models.mkdir()
        (models / "banana.json").write_text(json.dumps(banana))
        os.environ["GRADSERVE_MODELS_DIR"] = str(models)
        gradient = json.dumps(GRADIENT).encode()
        model_body = json.dumps({"inputs": {"theta": {"data": [0.5, 0.5]}},
                                 "grad": {"of": "logp"}}).encode()
        v1_body = json.dumps({
            "inputs": {"theta": {"data": [0.5, 0.5], "requires_grad": True},
                       **banana["constants"]},
            "nodes": banana["nodes"], "outputs": banana["outputs"], "dtype": banana["dtype"],
            "grad": {"of": "logp"}}).encode()
        servers = {"gradserve": Gunicorn("service.wsgi:app", "/umbridge/Gradient", tmp),
                   "umbridge": UmbridgeServer(tmp)}
        try:
            for s in servers.values():
                s.ready(gradient)
            res = throughput(servers, gradient, tmp, "gradient", rounds, seconds, load)
            print("\n" + "\n".join(report(
                f"(a) UM-Bridge Gradient on the banana posterior ({len(gradient)} bytes)", res,
                "umbridge", {"umbridge": "umbridge.serve_models (aiohttp), 2 threads",
                             "gradserve": "gradserve /umbridge, 2 workers"})))
            print(verdict("gradserve vs umbridge's server, req/s (issue 12)",
                          res["gradserve"]["rps"] / res["umbridge"]["rps"], ">=", 1.0),
                  flush=True)
            host = servers["gradserve"].url.rsplit("/umbridge", 1)[0]
            routes = {"model": _At(host + "/v1/models/banana/evaluate"),
                      "v1": _At(host + "/v1/evaluate")}
            routes["v1"].ready(v1_body)
            routes["model"].ready(model_body)
            res = throughput(routes, {"model": model_body, "v1": v1_body}, tmp, "banana",
                             rounds, seconds, load)
            print("\n" + "\n".join(report(
                "(b) the banana model with its gradient: model evaluate vs /v1/evaluate", res,
                "v1", {"model": f"POST /v1/models/banana/evaluate ({len(model_body)} B)",
                       "v1": f"POST /v1/evaluate, same graph ({len(v1_body)} B)"})))
            print(verdict("model evaluate time / /v1/evaluate time (issue 12)",
                          res["v1"]["rps"] / res["model"]["rps"], "<=", 1.1))
            print(verdict("model evaluate bytes sent / /v1/evaluate's (issue 12)",
                          len(model_body) / len(v1_body), "<", 0.5))
        finally:
            for s in servers.values():
                s.stop()
    print(f"\ntook {time.monotonic() - t0:.0f} s; rerun: python bench/interop.py"
          + (" --quick" if args.quick else ""))


class _At:
    """Another route of a running server, for throughput()."""

    def __init__(self, url: str):
        self.url = url

    def ready(self, body: bytes) -> None:
        r = requests.post(self.url, data=body, timeout=10,
                          headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            sys.exit(f"{self.url} answered {r.status_code}: {r.text[:300]}")


if __name__ == "__main__":
    main()
