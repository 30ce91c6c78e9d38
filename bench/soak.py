"""Soak: minutes of mixed valid and hostile traffic against a real gunicorn.

    python bench/soak.py --minutes 10          # the figures issue 6 reports
    python bench/soak.py --minutes 10 --no-recycle   # and with no worker ever recycled
    python bench/soak.py --minutes 1 --json    # what tests/e2e/test_soak.py runs

gunicorn starts as `make serve` starts it (tests/conftest.py's Server: service/gunicorn.conf.py,
GRADSERVE_* settings, 2 workers, a free loopback port), with one API key. --clients processes
then send, at random, the PROTOCOL.md §1 example (its numbers checked) or a case of the
hostile table in tests/service/test_hostile.py (its status and code checked), one connection
per request. First a warm-up: each client sends every case once, then random traffic for
--warmup seconds, so that the workers' heaps reach the size that big bodies leave them at
(allocator fragmentation levels off after a few dozen; that is not a leak). Memory is
measured after the warm-up, while the soak runs, and at the end, each time with no request
in flight at the start and end.

Prints: requests served by status, 5xx, wrong answers, connection errors, worker restarts
seen in the gunicorn log (and how many were max_requests recycling rather than deaths), and
the resident memory of master + workers at start and end. Needs the test extras (pytest).
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder heads sys.path, and its http.py would shadow the standard
# library's `http`: take the folder off; the hostile table and the server come from tests.
_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.conftest import EXAMPLE, Server  # noqa: E402
from tests.service.test_hostile import CASES, EXPECTED, KEY, Case  # noqa: E402

VALID_SHARE = 0.5  # of requests that are the §1 example; the rest are hostile cases
# What the gunicorn log says when a worker ends other than by max_requests recycling.
DEATH = re.compile(r"WORKER TIMEOUT|was sent SIG|exited with code|Worker failed to boot")


def _headers(case: Case) -> dict:
    """The case's headers, with the server's key unless the case is about a bad one."""
    headers = dict(case.headers)
    if not (case.keyed and case.code == "unauthorized"):
        headers.setdefault("Authorization", f"Bearer {KEY}")
    return headers


def send(port: int, case: Case | None, payload: bytes | None) -> tuple[int, str | None]:
    """One request on its own connection: the example (case None) or a hostile case.
    Returns the status and, for the example, None if its numbers are right else "wrong"."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        if case is None:
            conn.request("POST", "/v1/evaluate", payload, {"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {KEY}"})
        else:
            host = case.environ.get("HTTP_HOST")
            conn.putrequest(case.method, case.environ.get("PATH_INFO", case.path),
                            skip_host=host is not None, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host)
            for k, v in _headers(case).items():
                conn.putheader(k, v)
            unknown = set(case.environ) - {"CONTENT_LENGTH", "PATH_INFO", "HTTP_HOST"}
            assert not unknown, f"{case.name}: cannot send environ {unknown} over HTTP"
            declared = case.environ.get("CONTENT_LENGTH")  # a length whose body is never sent
            conn.putheader("Content-Length", declared or str(len(payload or b"")))
            conn.endheaders(None if declared else payload)
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    if case is None:
        ok = r.status == 200 and all(
            math.isclose(_flat(json.loads(body)[part][name]["data"]), _flat(want), rel_tol=1e-6)
            for (part, name), want in EXPECTED.items())
        return r.status, None if ok else "wrong"
    code = json.loads(body).get("code") if body[:1] == b"{" else None
    return r.status, None if (r.status, code) == (case.status, case.code) else code


def _flat(v) -> float:
    while isinstance(v, list):
        v = v[0]
    return v


def client(port: int, seconds: float, seed: int, warm: bool) -> dict:
    """One client process: every case once if `warm`, then random traffic for `seconds`."""
    rng = random.Random(seed)
    example = EXAMPLE
    payloads = {c.name: c.payload(example) for c in CASES}
    valid = json.dumps(example).encode()
    served, wrong, errors = Counter(), Counter(), Counter()

    def one(case):
        try:
            status, bad = send(port, case, payloads[case.name] if case else valid)
        except (OSError, http.client.HTTPException) as e:
            errors[f"{case.name if case else 'example'}: {type(e).__name__}"] += 1
            return
        served[status] += 1
        if bad is not None:
            wrong[f"{case.name if case else 'example'}: got {status} {bad}"] += 1

    if warm:
        for case in [None, *CASES]:
            one(case)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        one(None if rng.random() < VALID_SHARE else rng.choice(CASES))
    return {"served": served, "wrong": wrong, "errors": errors}


def processes(server: Server) -> list[int]:
    pid = server.proc.pid
    return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]


def rss(pids: list[int]) -> int:
    """Resident bytes of these processes (VmRSS)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def wait_for_workers(server: Server, workers: int, timeout: float = 60) -> int:
    """Ready means one worker answers; the others may still be booting. Their boot lines."""
    end = time.monotonic() + timeout
    while server.output().count("Booting worker") < workers and time.monotonic() < end:
        time.sleep(0.05)
    return server.output().count("Booting worker")


def run(minutes: float, clients: int, workers: int, warmup: float) -> dict:
    with Server(workers=workers, api_keys=KEY) as server:
        booted = wait_for_workers(server, workers)
        pids = processes(server)
        cold = rss(pids)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(clients) as pool:
            warm = pool.starmap(client, [(server.port, warmup, k + clients, True)
                                         for k in range(clients)])
            start = rss(processes(server))
            t0 = time.monotonic()
            pending = pool.starmap_async(client, [(server.port, minutes * 60, k, False)
                                                  for k in range(clients)])
            samples = []  # (seconds, RSS) while the soak runs: flat, or still climbing?
            while not pending.ready():
                pending.wait(max(minutes * 60 / 10, 1))
                samples.append((round(time.monotonic() - t0), rss(processes(server))))
            parts = pending.get()
            elapsed = time.monotonic() - t0
        end_pids = processes(server)
        end = rss(end_pids)
        each = {pid: rss([pid]) for pid in end_pids}
        log = server.output()
    total = {k: sum((p[k] for p in warm + parts), Counter()) for k in ("served", "wrong",
                                                                      "errors")}
    restarts = log.count("Booting worker") - booted
    return {
        "minutes": minutes, "clients": clients, "workers": workers, "warmup_s": warmup,
        "requests": sum(total["served"].values()),
        "per_second": round(sum(sum(p["served"].values()) for p in parts) / elapsed, 1),
        "by_status": {str(k): v for k, v in sorted(total["served"].items())},
        "5xx": sum(v for k, v in total["served"].items() if k >= 500),
        "wrong": dict(total["wrong"]), "errors": dict(total["errors"]),
        "worker_restarts": restarts, "recycled": log.count("Autorestarting worker"),
        "worker_deaths": len(DEATH.findall(log)),
        "rss_cold": cold, "rss_start": start, "rss_end": end,
        "growth": round(end / start - 1, 4), "rss_samples": samples,
        "pids_start": pids, "pids_end": end_pids, "rss_each": each, "log": str(server.log),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    ap.add_argument("--warmup", type=float, default=60, help="seconds of traffic before "
                    "the memory at start is read")
    ap.add_argument("--no-recycle", action="store_true", help="turn off gunicorn's "
                    "max_requests, so that no worker restart hides a leak")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.no_recycle:  # the command line beats service/gunicorn.conf.py's max_requests
        os.environ["GUNICORN_CMD_ARGS"] = "--max-requests 0"
    r = run(args.minutes, args.clients, args.workers, args.warmup)
    if args.json:
        print(json.dumps(r))
        return
    mib = 2**20
    print(f"soak: {r['minutes']} min after {r['warmup_s']:.0f} s of warm-up, {r['clients']} "
          f"client processes, {r['workers']} workers, {len(CASES)} hostile cases and the §1 "
          f"example ({VALID_SHARE:.0%})")
    print(f"  requests served   {r['requests']:,} ({r['per_second']}/s)  by status "
          f"{r['by_status']}")
    print(f"  5xx               {r['5xx']}")
    print(f"  wrong answers     {sum(r['wrong'].values())} {r['wrong'] or ''}")
    print(f"  connection errors {sum(r['errors'].values())} {r['errors'] or ''}")
    print(f"  worker restarts   {r['worker_restarts']} (max_requests recycling: "
          f"{r['recycled']}; deaths in the log: {r['worker_deaths']})")
    print(f"  RSS master+workers: cold {r['rss_cold'] / mib:.0f} MiB, after warm-up "
          f"{r['rss_start'] / mib:.0f} MiB, end {r['rss_end'] / mib:.0f} MiB "
          f"({r['growth']:+.1%})")
    print("  RSS while running " + ", ".join(f"{t}s {b / mib:.0f}" for t, b in r["rss_samples"]))
    print(f"  gunicorn log      {r['log']}")


if __name__ == "__main__":
    main()
