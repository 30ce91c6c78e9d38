"""HTTP benchmarks: gradserve against a bare Flask JSON endpoint on the same gunicorn.

    python bench/http.py            # about 1.5 minutes
    python bench/http.py --quick    # about 20 s

Both servers start as `make serve` starts gradserve (service/gunicorn.conf.py, 2 workers,
on free loopback ports): gradserve's service.wsgi:app and bench/echo_app.py, which
answers the posted JSON parsed and written again with orjson. Then:
  (a) the PROTOCOL.md §1 example and (b) a 1,000-node graph, each posted to both
      servers by wrk (8 connections; installed from apt when missing and allowed,
      else a multi-process Python client) in alternating rounds: req/s, p50, p99;
  (c) a 2048x2048 float32 tensor (4M elements) through `neg`, nested JSON vs base64
      in both directions, timed end to end by a Python client (array in, array out),
      against base64 decoding plus encoding the same bytes in-process;
  (d) one client posting the §1 example 1,000 times in a loop, on a new connection per call
      and on one kept-alive connection: per-call latency.
Traffic goes to 127.0.0.1 only. Issue 7's targets 3 and 4 are printed as PASS/MISS.
"""

import os
import sys

# This file is named like the standard library's `http`: take its folder off the path so
# that `import http.client` (requests, Flask) finds the real one; bench.* comes from the root.
_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import ast  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import requests  # noqa: E402

from bench.engine import chain_graph, pct, summary, table, verdict  # noqa: E402

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CONNECTIONS = 8


def protocol_example() -> dict:
    """The PROTOCOL.md §1 body: the tests' copy, read from tests/conftest.py without importing
    it (that needs pytest, which `make bench` does not install)."""
    tree = ast.parse((Path(ROOT) / "tests" / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
                "EXAMPLE"]:
            return ast.literal_eval(node.value)
    sys.exit("bench/http.py: tests/conftest.py holds no EXAMPLE (the PROTOCOL.md §1 body)")


def vmap_request(b: int) -> dict:
    """The §1 example over b input sets of x in one request (PROTOCOL.md §11)."""
    body = protocol_example()
    x = np.random.default_rng(0).uniform(-2, 2, (b, 2, 2)).round(3)
    body["inputs"]["x"] = {"shape": [b, 2, 2], "data": x.ravel().tolist()}
    body["vmap"] = {"inputs": ["x"]}
    return body


def chain_request(n: int) -> dict:
    """n nodes: bench/engine.py's elementwise chain of n - 1, then a sum to differentiate."""
    nodes = chain_graph(n - 1)
    nodes.append({"id": "total", "op": "sum", "args": [nodes[-1]["id"]]})
    return {"inputs": {"x": {"data": np.linspace(-1, 1, 8).tolist(), "requires_grad": True}},
            "nodes": nodes, "outputs": ["total"], "grad": {"of": "total", "wrt": ["x"]}}


# ---- servers ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """`gunicorn --config service/gunicorn.conf.py APP` with 2 workers on a free loopback
    port; its output goes to a log file, it is stopped with SIGTERM."""

    def __init__(self, app: str, path: str, logdir: Path):
        self.app, self.port = app, free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.log = logdir / f"{app.split(':')[0]}.log"
        env = dict(os.environ, GRADSERVE_BIND=f"127.0.0.1:{self.port}", GRADSERVE_WORKERS="2")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([GUNICORN, "--config", "service/gunicorn.conf.py", app],
                                         cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def ready(self, body: bytes, timeout: float = 60) -> None:
        """Wait until a POST of `body` answers 200."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                sys.exit(f"{self.app} exited {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(requests.ConnectionError):
                r = requests.post(self.url, data=body, timeout=10,
                                  headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    return
                sys.exit(f"{self.app} answered {r.status_code}: {r.text[:500]}")
            time.sleep(0.1)
        sys.exit(f"{self.app} did not become ready in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ---- load generators -------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
"""
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_present(install: bool) -> bool:
    if shutil.which("wrk"):
        return True
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print("  wrk is missing: apt-get install -y wrk", flush=True)
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "wrk"]):
        done = subprocess.run(cmd, capture_output=True, check=False)
        if cmd[1] == "install" and done.returncode == 0:
            break
    return shutil.which("wrk") is not None


def wrk_load(url: str, body_file: Path, seconds: int) -> dict:
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.replace("{path}", str(body_file)))
    done = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
                           "-s", str(script), url], capture_output=True, text=True, check=False)
    out = done.stdout
    if done.returncode or "Requests/sec" not in out:
        sys.exit(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")

    def latency(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"),
            "errors": (int(bad.group(1)) if bad else 0)
            + (sum(map(int, sock.groups())) if sock else 0)}


def python_load(url: str, body_file: Path, seconds: float) -> dict:
    """Fallback when wrk is absent: one process per core, the connections spread as threads."""
    procs = min(CONNECTIONS, os.cpu_count() or 1)
    share = [CONNECTIONS // procs + (i < CONNECTIONS % procs) for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.starmap(_load_process, [(url, str(body_file), n, seconds) for n in share])
    latencies = sorted(t for lat, _ in parts for t in lat)
    count = len(latencies)
    return {"rps": count / seconds, "p50": latencies[count // 2] if count else float("nan"),
            "p99": latencies[min(count - 1, int(count * 0.99))] if count else float("nan"),
            "errors": sum(err for _, err in parts)}


def _load_process(url: str, body_file: str, threads: int, seconds: float):
    body = Path(body_file).read_bytes()
    u = requests.utils.urlparse(url)
    latencies: list[float] = []
    errors = [0]
    end = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    def loop():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        while (t0 := time.perf_counter()) < end:
            try:
                conn.request("POST", u.path, body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
                if r.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, errors[0]


# ---- (a) and (b): throughput -----------------------------------------------------------

def throughput(servers: dict, body: bytes | dict[str, bytes], tmp: Path, name: str,
               rounds: int, seconds: float, load) -> dict[str, dict]:
    """Each server in turn for `rounds` rounds (order alternating); medians over rounds.
    `body` is posted to every server, or is one body per server's key."""
    files = {}
    for key in servers:
        files[key] = tmp / f"{name}-{key}.json"
        files[key].write_bytes(body[key] if isinstance(body, dict) else body)
    runs: dict[str, list[dict]] = {k: [] for k in servers}
    for r in range(rounds):
        for key in servers if r % 2 == 0 else reversed(list(servers)):
            runs[key].append(load(servers[key].url, files[key], seconds))
    return {key: {m: statistics.median(run[m] for run in rs) for m in ("rps", "p50", "p99")}
            | {"errors": sum(run["errors"] for run in rs)} for key, rs in runs.items()}


def report_throughput(title: str, res: dict[str, dict], targets: bool) -> list[str]:
    echo = res["echo"]["rps"]
    rows = [(label, f"{r['rps']:,.0f}", f"{r['p50'] * 1e3:.2f}", f"{r['p99'] * 1e3:.2f}",
             f"{r['p99'] / r['p50']:.2f}", f"{r['rps'] / echo:.2f}", str(r["errors"]))
            for label, r in (("bare Flask echo (baseline)", res["echo"]),
                             ("gradserve /v1/evaluate", res["gradserve"]))]
    out = [title, table(("server", "req/s", "p50 ms", "p99 ms", "p99/p50", "x echo", "errors"),
                        rows, (30, 9, 9, 9, 9, 8, 8))]
    if any(r["errors"] for r in res.values()):
        out.append("  ERRORS: some answers were not 200; the figures above count them")
    if targets:
        g = res["gradserve"]
        out.append(verdict("throughput vs bare Flask echo (issue 7 target 3)",
                           g["rps"] / echo, ">=", 0.8))
        out.append(verdict("gradserve p99 / p50 (issue 7 target 3)", g["p99"] / g["p50"],
                           "<", 3.0))
    return out


# ---- (d): one client in a loop, with and without keep-alive ------------------------------

def call_loop(url: str, body: bytes, calls: int, keep_alive: bool) -> list[float]:
    """Seconds per call of `calls` sequential POSTs: on one kept-alive connection, or on a new
    connection per call (Connection: close, as every call was with v1's sync workers)."""
    u = requests.utils.urlparse(url)
    headers = {"Content-Type": "application/json"}
    if not keep_alive:
        headers["Connection"] = "close"
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.request("POST", u.path, body, headers)
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t0)
        if r.status != 200:
            sys.exit(f"keep-alive loop: {r.status} {r.read()[:300]}")
        if r.will_close:
            conn.close()  # http.client reconnects on the next request
    conn.close()
    return times


def bench_keepalive(servers: dict, body: bytes, calls: int) -> list[str]:
    """Both ways in 4 alternating rounds per server, calls / 4 each: a busy neighbour slows
    both alike."""
    rows, medians = [], {}
    for key in ("echo", "gradserve"):
        call_loop(servers[key].url, body, 50, True)  # warm both workers' paths
        runs: dict[bool, list[float]] = {False: [], True: []}
        for r in range(4):
            for keep in (False, True) if r % 2 == 0 else (True, False):
                runs[keep] += call_loop(servers[key].url, body, calls // 4, keep)
        for keep in (False, True):
            t = sorted(runs[keep])
            medians[key, keep] = statistics.median(t)
            rows.append((f"{key}, {'kept alive' if keep else 'new connection per call'}",
                         f"{statistics.median(t) * 1e3:.3f}",
                         f"{t[int(len(t) * 0.99)] * 1e3:.3f}", f"{sum(t):.2f}"))
    g = medians["gradserve", False] / medians["gradserve", True]
    return [f"(d) one client, {calls:,} sequential calls of the §1 example ({len(body)} bytes), "
            "http.client, with and without keep-alive",
            table(("loop", "p50 ms", "p99 ms", "total s"), rows, (42, 9, 9, 9)),
            f"  gradserve per-call latency, new connection / kept alive: {g:.2f}x"]


# ---- (e): many input sets in one request -------------------------------------------------

VMAP_B = 1000


def bench_vmap(server, small: bytes, tmp: Path, rounds: int, seconds: float, load) -> list[str]:
    """Evaluations per second: one request per evaluation, against B = 1,000 per request."""
    body = orjson.dumps(vmap_request(VMAP_B))
    one = throughput({"gradserve": server}, small, tmp, "one", rounds, seconds, load)
    many = throughput({"gradserve": server}, body, tmp, "vmap", rounds, seconds, load)
    per_request, batched = one["gradserve"]["rps"], many["gradserve"]["rps"] * VMAP_B
    rows = [("one request per evaluation", f"{per_request:,.0f}", "1.00"),
            (f"vmap, {VMAP_B:,} per request", f"{batched:,.0f}", f"{batched / per_request:.1f}")]
    return [f"(e) the §1 example, evaluations per second, gradients included ({len(body):,} "
            f"bytes per vmap request)",
            table(("case", "evals/s", "x one"), rows, (34, 12, 9)),
            verdict(f"vmap over {VMAP_B:,} input sets vs one request each (issue 15)",
                    batched / per_request, ">=", 100)]


# ---- (c): a large tensor both ways -----------------------------------------------------

SIDE = 2048  # 2048 x 2048 = 4M float32 elements, 16 MiB


def big_request(x: np.ndarray, encoding: str) -> bytes:
    if encoding == "base64":
        t = {"shape": list(x.shape), "dtype": "float32", "b64": base64.b64encode(x).decode()}
    else:
        t = {"data": x}  # orjson writes the array as nested lists itself
    return orjson.dumps({"inputs": {"x": t}, "nodes": [{"id": "y", "op": "neg", "args": ["x"]}],
                         "outputs": ["y"], "encoding": encoding},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def big_response(body: bytes) -> np.ndarray:
    y = orjson.loads(body)["outputs"]["y"]
    if "b64" in y:
        return np.frombuffer(base64.b64decode(y["b64"]), "<f4").reshape(y["shape"])
    return np.asarray(y["data"], np.float32)


def round_trip(session: requests.Session, url: str, x: np.ndarray, encoding: str) -> dict:
    """Seconds from the array in the client to the result array in the client, and the
    client's own share (writing the request, reading the response)."""
    t0 = time.perf_counter()
    body = big_request(x, encoding)
    t1 = time.perf_counter()
    r = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
    t2 = time.perf_counter()
    if r.status_code != 200:
        sys.exit(f"gradserve answered {r.status_code} to the {encoding} 4M request: "
                 f"{r.text[:500]}")
    y = big_response(r.content)
    t3 = time.perf_counter()
    if not np.array_equal(y, -x):
        sys.exit(f"gradserve's {encoding} answer to neg is not -x")
    return {"total": t3 - t0, "client": (t1 - t0) + (t3 - t2), "request MB": len(body) / 1e6,
            "response MB": len(r.content) / 1e6}


def codecs() -> dict:
    """The base64 codecs at hand: the standard library's, and pybase64 (SIMD) if installed.
    The limit is the fastest of them, whichever the service uses."""
    found = {"stdlib base64": base64}
    with contextlib.suppress(ImportError):
        import pybase64
        found["pybase64"] = pybase64
    return found


def codec_limit(x: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds to base64-decode the bytes of x and base64-encode them again, by codec."""
    out = {}
    for name, codec in codecs().items():
        text = codec.b64encode(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            codec.b64encode(codec.b64decode(text))
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def bench_big(url: str, nested_n: int, b64_n: int) -> list[str]:
    x = np.random.default_rng(2).standard_normal((SIDE, SIDE), np.float32)
    runs: dict[str, list[dict]] = {"nested": [], "base64": []}
    with requests.Session() as session:
        round_trip(session, url, x, "base64")  # warm the code paths
        for k in range(max(nested_n, b64_n)):
            for encoding, n in (("nested", nested_n), ("base64", b64_n)):
                if k < n:
                    runs[encoding].append(round_trip(session, url, x, encoding))
    limits = codec_limit(x, max(b64_n, 5))
    total = {enc: summary([r["total"] for r in rs]) for enc, rs in runs.items()}
    exchange = {enc: statistics.median(r["total"] - r["client"] for r in rs)
                for enc, rs in runs.items()}
    mb = x.nbytes / 1e6
    rows = []
    for enc, rs in runs.items():
        med = total[enc]["median"]
        rows.append((f"HTTP, {enc} both ways", f"{rs[0]['request MB']:.1f}",
                     f"{rs[0]['response MB']:.1f}", f"{med * 1e3:,.0f}",
                     pct(total[enc]["spread"]) if len(rs) > 2 else "-",
                     f"{exchange[enc] * 1e3:,.0f}", f"{mb / med:,.0f}"))
    for name, t in limits.items():
        rows.append((f"in-process decode+encode, {name}", "-", "-", f"{t * 1e3:,.0f}", "-", "-",
                     f"{mb / t:,.0f}"))
    limit = min(limits.values())
    end_to_end = total["base64"]["median"]
    return [f"(c) {SIDE}x{SIDE} float32 (4M elements, {mb:.1f} MB) through neg, timed in a Python "
            f"client (requests + orjson): {len(runs['nested'])} nested and "
            f"{len(runs['base64'])} base64 requests",
            table(("path", "req MB", "resp MB", "e2e ms", "spread", "exch ms", "MB/s"), rows,
                  (42, 8, 9, 9, 8, 9, 7)),
            "  e2e = array in the client to result array in the client (the client writes the "
            "request and reads the answer);\n  exch = the HTTP exchange alone, request bytes "
            f"to response bytes (server and transport); MB/s = {mb:.1f} MB / the row's time",
            verdict("base64 speed-up over nested JSON, end to end (issue 7 target 4)",
                    total["nested"]["median"] / end_to_end, ">=", 5.0),
            verdict("base64 speed-up over nested JSON, HTTP exchange alone",
                    exchange["nested"] / exchange["base64"], ">=", 5.0),
            verdict("fastest in-process decode+encode / base64 end to end (issue 7 target 4)",
                    limit / end_to_end, ">=", 0.5),
            verdict("fastest in-process decode+encode / base64 HTTP exchange alone",
                    limit / exchange["base64"], ">=", 0.5)]


# ---- main ------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (~20 s in all)")
    ap.add_argument("--seconds", type=int,
                    help="length of one load round, whole seconds for wrk (default 3, quick 2)")
    ap.add_argument("--rounds", type=int, help="load rounds per server and body (default 3, "
                    "quick 1)")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator: wrk (installed from apt if allowed), python, or auto")
    ap.add_argument("--no-install", dest="install", action="store_false",
                    help="never apt-get install wrk")
    ap.add_argument("--only", default="small,chain,keepalive,vmap,big",
                    help="comma-separated sections: small (a), chain (b), keepalive (d), "
                         "vmap (e), big (c)")
    args = ap.parse_args()
    seconds = args.seconds or (2 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 3)
    only = set(args.only.split(","))
    use_wrk = args.load != "python" and wrk_present(args.install and args.load != "python")
    if args.load == "wrk" and not use_wrk:
        sys.exit("wrk is not installed and could not be")
    load = wrk_load if use_wrk else python_load

    t_start = time.monotonic()
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                   if k.startswith(("GRADSERVE_", "MALLOC_")))
    print(f"gradserve HTTP bench, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()} "
          f"({os.cpu_count()} cores, {platform.machine()})\n"
          f"  gunicorn --config service/gunicorn.conf.py, 2 workers, on 127.0.0.1; load: "
          f"{'wrk -t1' if use_wrk else 'multi-process Python client'}, {CONNECTIONS} "
          f"connections, {rounds} round(s) of {seconds:g} s per server and body, servers "
          f"alternating; medians over rounds"
          + (f"\n  environment: {env}" if env else ""), flush=True)
    with tempfile.TemporaryDirectory(prefix="gradserve-bench-") as tmp:
        tmp = Path(tmp)
        small = orjson.dumps(protocol_example())
        servers = {"echo": Gunicorn("bench.echo_app:app", "/echo", tmp),
                   "gradserve": Gunicorn("service.wsgi:app", "/v1/evaluate", tmp)}
        try:
            for s in servers.values():
                s.ready(small)
            if "small" in only:
                res = throughput(servers, small, tmp, "small", rounds, seconds, load)
                print("\n" + "\n".join(report_throughput(
                    f"(a) PROTOCOL.md §1 example ({len(small)} bytes): POST to each server",
                    res, True)), flush=True)
            if "chain" in only:
                body = orjson.dumps(chain_request(1000))
                res = throughput(servers, body, tmp, "chain", rounds, seconds, load)
                print("\n" + "\n".join(report_throughput(
                    f"(b) a 1,000-node graph (elementwise chain on shape (8,), forward+backward;"
                    f" {len(body):,} bytes): POST to each server", res, False)), flush=True)
            if "keepalive" in only:
                print("\n" + "\n".join(bench_keepalive(servers, small, 1000)), flush=True)
            if "vmap" in only:
                print("\n" + "\n".join(bench_vmap(servers["gradserve"], small, tmp, rounds,
                                                   seconds, load)), flush=True)
            if "big" in only:
                nested_n, b64_n = (1, 3) if args.quick else (3, 7)
                print("\n" + "\n".join(bench_big(servers["gradserve"].url, nested_n, b64_n)),
                      flush=True)
        finally:
            for s in servers.values():
                s.stop()
    flags = ["--quick" if args.quick else "",
             f"--only {args.only}" if args.only != ap.get_default("only") else "",
             f"--load {args.load}" if args.load != "auto" else ""]
    rerun = " ".join(["python bench/http.py", *filter(None, flags)])
    print(f"\ntook {time.monotonic() - t_start:.0f} s; rerun: {rerun}")


if __name__ == "__main__":
    main()
