"""Engine benchmarks: the graph runner against the same math hand-written in NumPy.

    python bench/engine.py            # about a minute (two on a busy machine)
    python bench/engine.py --quick    # about 20 s, fewer and shorter repeats

Sections (issue 2's benchmark, issue 7's targets 1, 2 and 5):
  1. per-node overhead of forward+backward on a chain of 1000 elementwise ops
     on a shape-(8,) tensor: plan once then plan.run, plan+run per call, the
     eager Tensor API, hand-written NumPy (the baseline) and PyTorch eager
     (when torch is importable);
  2. one MLP step, 64x784 -> 256 -> 10 with mse_loss, float32;
  3. sum(exp(sin(x)) * x) on 4M float32 elements, gradient wrt x;
  4. peak memory of one evaluation (tracemalloc) against the bytes of its
     inputs, outputs, gradients and the intermediates backward needs;
  5. derivatives beyond one gradient on the MLP of (2) (issue 10): HVP against
     the gradient, JVP against the forward pass, k = 16 batched cotangents
     against 16 gradient runs, and torch.func's jvp, vmap(vjp) and hvp
     (jvp of grad) side by side when torch is importable;
  6. per-example gradients (vmap, issue 15) of the MLP over B = 256 rows
     against the ordinary mean-loss gradient over the same rows, and
     torch.func.vmap(grad) when torch is importable.
  7. the ops of PROTOCOL §2.1 (issue 11): per-node cost of chains of each new
     elementwise op against v1's, einsum against numpy.einsum with the same
     path on the MLP's contraction, logsumexp and log_softmax against a
     hand-written stable NumPy version on 4M float32 elements.
Sections 2 and 3 run in fresh subprocesses, once with glibc's default malloc
and once with its thresholds raised, since page faults can dominate there.

Every figure is the median of several repeats; the cases of a section take
turns inside each repeat, so that a noisy neighbour slows all of them alike.
The ratios are the result: absolute times on a shared 2-core machine are not.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder heads sys.path, and its http.py would shadow the standard
# library's `http` for everything imported here (torch among them): take the folder off.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

# One BLAS thread, as each gunicorn worker runs (service/gunicorn.conf.py): set before NumPy.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import operator  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import autograd  # noqa: E402
from autograd import Leaf, Tensor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# glibc keeps freed blocks below these in the heap instead of returning them to the kernel,
# so a repeated step stops paying page faults. 32 MiB is the most glibc accepts for the first.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
                "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}


# ---- timing ----------------------------------------------------------------------------

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK_DOC = {"cpu": "CPU seconds of the process that runs the case",
             "wall": "elapsed seconds"}


def sample(fn: Callable[[], object], n: int, clock: Callable[[], float]) -> float:
    """Seconds for n calls of fn, by `clock`."""
    gc.collect()
    t0 = clock()
    for _ in range(n):
        fn()
    return clock() - t0


class Timer:
    """Medians of `repeats` samples; one sample runs a case for about `budget` seconds.

    A case is a function of n that returns the seconds n calls took, so that a case may
    run in another process (Child). The cases take turns within every repeat, in
    alternating order, so that a noisy neighbour slows all of them alike.
    """

    def __init__(self, repeats: int, budget: float, clock: str):
        self.repeats, self.budget, self.clock = repeats, budget, CLOCKS[clock]

    def local(self, fn: Callable[[], object]) -> Callable[[int], float]:
        return lambda n: sample(fn, n, self.clock)

    def compare(self, cases: dict[str, Callable[[int], float]]) -> dict[str, dict]:
        """Seconds per call of each case: {"median", "spread"}."""
        number = {}
        for name, case in cases.items():  # warm up, then size each sample to the budget
            case(1)
            number[name] = max(1, round(self.budget / max(case(1), 1e-9)))
        samples: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(self.repeats):
            for name in names if r % 2 == 0 else reversed(names):
                samples[name].append(cases[name](number[name]) / number[name])
        return {name: summary(s) for name, s in samples.items()}


def summary(samples: list[float]) -> dict:
    """The median, and the spread (interquartile range over the median) to judge the noise."""
    med = statistics.median(samples)
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [med, med, med]
    return {"median": med, "spread": (q[2] - q[0]) / med if med else 0.0}


TARGET_TESTS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}


def verdict(what: str, ratio: float, test: str, limit: float) -> str:
    """A target line: PASS when `ratio test limit` holds, e.g. verdict(.., 1.1, "<=", 1.15)."""
    mark = "PASS" if TARGET_TESTS[test](ratio, limit) else "MISS"
    return f"  {mark}  {what}: {ratio:.2f}x (target {test} {limit:g}x)"


def table(header: tuple[str, ...], rows: list[tuple], widths: tuple[int, ...]) -> str:
    lines = ["  " + "".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w)
                            in enumerate(zip(header, widths, strict=True)))]
    for row in rows:
        lines.append("  " + "".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w)
                                    in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def pct(spread: float) -> str:
    return f"{100 * spread:.0f}%"


def check(what: str, got, want, rtol: float, atol: float = 0.0) -> None:
    """The cases must compute the same numbers, or their times mean nothing."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
        sys.exit(f"bench/engine.py: {what} disagrees with the baseline: "
                 f"max |diff| {np.max(np.abs(got - want)):.3g}")


# ---- 1. per-node overhead --------------------------------------------------------------

# One cycle of the chain: values settle near 0.80 and every gradient stays a normal float32
# (about 1e-14 after 1000 ops), so no denormal arithmetic slows any case.
CYCLE = ("exp", "sin", "tanh", 1.2)
NUMPY_RULES = {  # name: (forward, gradient from (x, y, g)), written as by hand
    "exp": (np.exp, lambda x, y, g: g * y),
    "sin": (np.sin, lambda x, y, g: g * np.cos(x)),
    "tanh": (np.tanh, lambda x, y, g: g * (1 - y * y)),
}


def chain_steps(n: int) -> list:
    return [CYCLE[k % len(CYCLE)] for k in range(n)]


def chain_graph(n: int) -> list[dict]:
    nodes, prev = [], "x"
    for k, step in enumerate(chain_steps(n)):
        args = [prev] if isinstance(step, str) else [prev, step]
        nodes.append({"id": f"n{k}", "op": step if isinstance(step, str) else "mul",
                      "args": args})
        prev = f"n{k}"
    return nodes


def numpy_chain(x, seed, steps):
    tape = []
    for step in steps:
        y = NUMPY_RULES[step][0](x) if isinstance(step, str) else x * step
        tape.append((step, x, y))
        x = y
    g = seed
    for step, x, y in reversed(tape):
        g = NUMPY_RULES[step][1](x, y, g) if isinstance(step, str) else g * step
    return g


def eager_chain(x0, seed, steps):
    x = y = Tensor(x0, requires_grad=True)
    for step in steps:
        y = getattr(y, step)() if isinstance(step, str) else y * step
    y.backward(seed)
    return x.grad


def torch_chain(torch, x0, seed, steps):
    x = y = torch.tensor(x0, requires_grad=True)
    for step in steps:
        y = getattr(torch, step)(y) if isinstance(step, str) else y * step
    y.backward(seed)
    return x.grad


def bench_chain(timer: Timer, n: int, use_torch: bool) -> list[str]:
    x0 = np.linspace(-1, 1, 8, dtype=np.float32)
    seed = np.ones(8, np.float32)
    steps, nodes = chain_steps(n), chain_graph(n)
    grad = {"of": nodes[-1]["id"], "wrt": ["x"]}
    leaves = {"x": Leaf((8,), True)}
    planned = autograd.plan(nodes, leaves, outputs=[grad["of"]], grad=grad, seed_shape=(8,))
    arrays = {"x": x0}

    def full():
        p = autograd.plan(nodes, leaves, outputs=[grad["of"]], grad=grad, seed_shape=(8,))
        return p.run(arrays, seed)

    cases = {
        "hand-written NumPy (baseline)": lambda: numpy_chain(x0, seed, steps),
        "(a) plan once, then plan.run": lambda: planned.run(arrays, seed),
        "(b) plan + run, per call": full,
        "(c) eager Tensor + .backward()": lambda: eager_chain(x0, seed, steps),
    }
    want = numpy_chain(x0, seed, steps)
    if not (np.isfinite(want).all() and np.abs(want).min() > 1e-30):
        sys.exit("bench/engine.py: the chain's gradient left the normal float32 range")
    check("plan.run's chain gradient", planned.run(arrays, seed).gradients["x"], want, 1e-4)
    check("plan+run's chain gradient", full().gradients["x"], want, 1e-4)
    check("the eager chain gradient", eager_chain(x0, seed, steps), want, 1e-4)

    torch = _torch() if use_torch else None
    if torch is not None:
        tseed = torch.from_numpy(seed)
        cases["PyTorch eager"] = lambda: torch_chain(torch, x0, tseed, steps)
        check("PyTorch's chain gradient", torch_chain(torch, x0, tseed, steps).numpy(), want,
              1e-3)
    t = timer.compare({name: timer.local(fn) for name, fn in cases.items()})
    base = t["hand-written NumPy (baseline)"]["median"]
    tt = t["PyTorch eager"]["median"] if torch is not None else None
    rows = []
    for name, r in t.items():
        row = (name, f"{r['median'] / n * 1e6:.2f}", pct(r["spread"]),
               f"{r['median'] / base:.2f}", f"{r['median'] / tt:.2f}" if tt else "-")
        rows.append(row)
    out = [f"(1) per-node overhead: forward+backward through a chain of {n} elementwise ops "
           f"(exp, sin, tanh, *1.2) on shape (8,), float32",
           table(("case", "µs/node", "spread", "x NumPy", "x torch"), rows,
                 (34, 10, 9, 10, 10))]
    if torch is None and use_torch:
        out.append("  (no torch column: torch is not importable; `pip install torch==2.13.0`)")
    for name, label in (("(a) plan once, then plan.run", "per-node, plan.run"),
                        ("(b) plan + run, per call", "per-node, plan + run")):
        out.append(verdict(f"{label} vs hand-written NumPy (issue 7 target 1)",
                           t[name]["median"] / base, "<=", 2.0))
    if tt:
        out.append(verdict("per-node, plan.run vs PyTorch eager (issue 2: below torch)",
                           t["(a) plan once, then plan.run"]["median"] / tt, "<", 1.0))
    return out


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


# ---- 2. MLP step ---------------------------------------------------------------------------

MLP_NODES = [
    {"id": "h", "op": "matmul", "args": ["x", "W1"]},
    {"id": "z", "op": "add", "args": ["h", "b1"]},
    {"id": "a", "op": "relu", "args": ["z"]},
    {"id": "o", "op": "matmul", "args": ["a", "W2"]},
    {"id": "p", "op": "add", "args": ["o", "b2"]},
    {"id": "loss", "op": "mse_loss", "args": ["p", "t"]},
]
MLP_PARAMS = ("W1", "b1", "W2", "b2")


def mlp_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f32 = np.float32
    return {"x": rng.standard_normal((64, 784), f32),
            "W1": rng.standard_normal((784, 256), f32) / f32(28),
            "b1": rng.standard_normal(256, f32) / f32(10),
            "W2": rng.standard_normal((256, 10), f32) / f32(16),
            "b2": rng.standard_normal(10, f32) / f32(10),
            "t": rng.standard_normal((64, 10), f32)}


def mlp_plan(arrays):
    leaves = {k: Leaf(a.shape, k in MLP_PARAMS) for k, a in arrays.items()}
    return autograd.plan(MLP_NODES, leaves, outputs=["loss"],
                         grad={"of": "loss", "wrt": list(MLP_PARAMS)})


def numpy_mlp(x, W1, b1, W2, b2, t):  # noqa: N803 (the math's names)
    """Forward and backprop by hand, the graph's math; no gradient for x."""
    z = x @ W1 + b1
    a = np.maximum(z, 0)
    d = a @ W2 + b2 - t
    loss = np.mean(np.square(d))
    dp = d * np.float32(2 / d.size)
    da = np.where(a > 0, dp @ W2.T, 0)
    return loss, {"W1": x.T @ da, "b1": da.sum(0), "W2": a.T @ dp, "b2": dp.sum(0)}


def mlp_cases() -> dict[str, Callable[[], object]]:
    arrays = mlp_arrays()
    planned = mlp_plan(arrays)
    loss, want = numpy_mlp(**arrays)
    got = planned.run(arrays)
    check("the MLP loss", got.outputs["loss"], loss, 1e-5)
    for k in MLP_PARAMS:
        check(f"the MLP gradient of {k}", got.gradients[k], want[k], 1e-4, 1e-6)
    return {"hand-written NumPy (baseline)": lambda: numpy_mlp(**arrays),
            "plan once, then plan.run": lambda: planned.run(arrays),
            "plan + run, per call": lambda: mlp_plan(arrays).run(arrays)}


# ---- 3. a large elementwise graph ---------------------------------------------------------

BIG = 4 * 2**20
BIG_NODES = [
    {"id": "s", "op": "sin", "args": ["x"]},
    {"id": "e", "op": "exp", "args": ["s"]},
    {"id": "m", "op": "mul", "args": ["e", "x"]},
    {"id": "y", "op": "sum", "args": ["m"]},
]


def big_input() -> np.ndarray:
    return np.random.default_rng(1).uniform(-2, 2, BIG).astype(np.float32)


def big_plan():
    return autograd.plan(BIG_NODES, {"x": Leaf((BIG,), True)}, outputs=["y"],
                         grad={"of": "y", "wrt": ["x"]})


def numpy_big(x):
    """y = Σ e·x with e = exp(sin x); dy/dx = e + x·e·cos x, as one would write it."""
    e = np.exp(np.sin(x))
    y = np.sum(e * x)
    return y, e + x * e * np.cos(x)


def big_cases() -> dict[str, Callable[[], object]]:
    x = big_input()
    planned = big_plan()
    y, want = numpy_big(x)
    got = planned.run({"x": x})
    check("sum(exp(sin(x)) * x)", got.outputs["y"], y, 1e-3)
    check("its gradient", got.gradients["x"], want, 1e-4, 1e-5)
    return {"hand-written NumPy (baseline)": lambda: numpy_big(x),
            "plan once, then plan.run": lambda: planned.run({"x": x})}


# ---- sections 2 and 3 in fresh processes, one per malloc setting ----------------------

SECTIONS = {  # name: (cases, title, unit)
    "mlp": (mlp_cases, "(2) MLP step: x 64x784 @ W1 + b1 -> relu -> @ W2 + b2 -> mse_loss, "
            "gradients of W1 b1 W2 b2, float32", "ms/step"),
    "elementwise": (big_cases, "(3) sum(exp(sin(x)) * x), x of 4M float32, gradient wrt x",
                    "ms/eval"),
}
MALLOC_SETTINGS = {"default malloc": {}, "malloc raised": MALLOC_TUNED}


class Child:
    """A fresh Python that builds a section's cases, then times one on each request.

    Its lines: it prints the case names once (after checking their results), then
    answers each "n name" line on stdin with the seconds that n calls took.
    """

    def __init__(self, section: str, malloc: dict, clock: str):
        env = {k: v for k, v in os.environ.items() if k not in MALLOC_TUNED}
        env.update(malloc)
        self.proc = subprocess.Popen([sys.executable, __file__, "--child", section,
                                      "--clock", clock], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.names = json.loads(self._read())

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"bench/engine.py: a child exited ({self.proc.wait()}); see above")
        return line

    def case(self, name: str) -> Callable[[int], float]:
        def run(n: int) -> float:
            self.proc.stdin.write(f"{n} {name}\n")
            self.proc.stdin.flush()
            return float(self._read())
        return run

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve_child(section: str, clock: str) -> None:
    cases = SECTIONS[section][0]()
    print(json.dumps(list(cases)), flush=True)
    for line in sys.stdin:
        n, name = line.rstrip("\n").split(" ", 1)
        print(repr(sample(cases[name], int(n), CLOCKS[clock])), flush=True)


def bench_in_children(timer: Timer, section: str, clock: str) -> list[str]:
    """Both malloc settings' cases in one comparison, so they take turns like the rest."""
    _, title, unit = SECTIONS[section]
    children = {setting: Child(section, env, clock) for setting, env in MALLOC_SETTINGS.items()}
    try:
        t = timer.compare({f"{name} [{setting}]": child.case(name)
                           for setting, child in children.items() for name in child.names})
    finally:
        for child in children.values():
            child.close()
    rows, lines = [], []
    for setting, child in children.items():
        base = t[f"{child.names[0]} [{setting}]"]["median"]
        for name in child.names:
            r = t[f"{name} [{setting}]"]
            rows.append((f"{name} [{setting}]", f"{r['median'] * 1e3:.3f}", pct(r["spread"]),
                         f"{r['median'] / base:.2f}"))
        ratio = t[f"plan once, then plan.run [{setting}]"]["median"] / base
        lines.append(verdict(f"plan.run vs hand-written NumPy, {setting} (issue 7 target 2)",
                             ratio, "<=", 1.15))
    default, raised = MALLOC_SETTINGS
    for name in children[default].names:
        ratio = t[f"{name} [{raised}]"]["median"] / t[f"{name} [{default}]"]["median"]
        lines.append(f"  time with malloc raised / default malloc, {name}: {ratio:.2f}")
    return [title, table(("case [malloc]", unit, "spread", "x NumPy"), rows,
                         (50, 10, 9, 10))] + lines


# ---- 4. peak memory ----------------------------------------------------------------------

def traced_peak(fn: Callable[[], object]) -> int:
    """Bytes allocated at the peak while `fn` runs, above what existed when it started."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


def bench_memory() -> list[str]:
    """Peak over needed bytes. Needed: inputs, outputs, gradients, and what backward reads
    (MLP: a = relu(z) and the prediction p; 4M: e = exp(sin x)), listed here by hand."""
    rows = []
    arrays = mlp_arrays()
    inputs = sum(a.nbytes for a in arrays.values())
    params = sum(arrays[k].nbytes for k in MLP_PARAMS)
    saved = (64 * 256 + 64 * 10) * 4
    need = inputs + 4 + params + saved
    planned = mlp_plan(arrays)
    rows.append(("MLP step", need, inputs + traced_peak(lambda: planned.run(arrays)),
                 inputs + traced_peak(lambda: numpy_mlp(**arrays))))
    x = big_input()
    need = x.nbytes + 4 + x.nbytes + x.nbytes
    planned = big_plan()
    rows.append(("sum(exp(sin(x)) * x), 4M", need,
                 x.nbytes + traced_peak(lambda: planned.run({"x": x})),
                 x.nbytes + traced_peak(lambda: numpy_big(x))))
    out = ["(4) peak memory of one evaluation (tracemalloc, inputs included) vs the bytes of "
           "inputs + outputs + gradients + intermediates backward needs",
           table(("graph", "needed MB", "plan.run MB", "x needed", "NumPy MB", "x needed"),
                 [(n, f"{need / 1e6:.2f}", f"{e / 1e6:.2f}", f"{e / need:.2f}",
                   f"{h / 1e6:.2f}", f"{h / need:.2f}") for n, need, e, h in rows],
                 (28, 11, 13, 10, 11, 10))]
    out += [verdict(f"peak memory, {n} (issue 7 target 5)", e / need, "<=", 1.5)
            for n, need, e, _ in rows]
    return out


# ---- 5. derivatives beyond one gradient -------------------------------------------------

K = 16


def derivative_cases(use_torch: bool) -> tuple[dict[str, Callable[[], object]], dict]:
    """Plans for each derivative of the MLP, checked against each other, and their runs."""
    arrays = mlp_arrays()
    leaves = {k: Leaf(a.shape, k in MLP_PARAMS) for k, a in arrays.items()}
    params = list(MLP_PARAMS)
    rng = np.random.default_rng(2)
    tangents = {k: rng.standard_normal(arrays[k].shape).astype(np.float32) for k in params}
    seeds = rng.standard_normal((K, 64, 10)).astype(np.float32)
    forward = autograd.plan(MLP_NODES, leaves, outputs=["loss"])
    grad = mlp_plan(arrays)
    jvp = autograd.plan(MLP_NODES, leaves, outputs=["loss"],
                        jvp={"of": ["loss"], "tangents": {k: v.shape for k, v in tangents.items()}})
    hvp = autograd.plan(MLP_NODES, leaves, outputs=["loss"],
                        hvp={"of": "loss", "wrt": params,
                             "tangents": {k: v.shape for k, v in tangents.items()}})
    one = autograd.plan(MLP_NODES, leaves, outputs=["p"],
                        grad={"of": "p", "wrt": params}, seed_shape=(64, 10))
    batched = autograd.plan(MLP_NODES, leaves, outputs=["p"],
                            grad={"of": "p", "wrt": params, "batch": True}, seed_shape=seeds.shape)
    g = grad.run(arrays).gradients
    check("the JVP against <gradient, tangent>", jvp.run(arrays, tangents=tangents).jvp["loss"],
          sum(np.sum(g[k] * tangents[k]) for k in params), 1e-3, 1e-6)
    rows = batched.run(arrays, seeds).gradients
    for i in (0, K - 1):
        check(f"batched cotangent row {i}", rows["W1"][i],
              one.run(arrays, seeds[i]).gradients["W1"], 1e-4, 1e-6)
    hv = {"seed": None, "tangents": tangents}
    cases = {
        "forward pass": lambda: forward.run(arrays),
        "gradient (forward + backward)": lambda: grad.run(arrays),
        "JVP, tangents on W1 b1 W2 b2": lambda: jvp.run(arrays, tangents=tangents),
        "HVP, of loss wrt W1 b1 W2 b2": lambda: hvp.run(arrays, hvp=hv),
        f"{K} gradient runs of p, one seed each": lambda: [one.run(arrays, s) for s in seeds],
        f"{K} cotangents of p in one batch": lambda: batched.run(arrays, seeds),
    }
    torch = _torch() if use_torch else None
    if torch is not None:
        cases.update(torch_derivative_cases(torch, arrays, tangents, seeds))
    return cases, {"torch": torch is not None}


def torch_derivative_cases(torch, arrays, tangents, seeds) -> dict[str, Callable[[], object]]:
    from torch.func import grad as tgrad
    from torch.func import jvp as tjvp
    from torch.func import vjp as tvjp
    from torch.func import vmap

    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    params = tuple(t[k] for k in MLP_PARAMS)
    tans = tuple(torch.from_numpy(tangents[k]) for k in MLP_PARAMS)
    tseeds = torch.from_numpy(seeds)

    def pred(W1, b1, W2, b2):  # noqa: N803
        return torch.relu(t["x"] @ W1 + b1) @ W2 + b2

    def loss(W1, b1, W2, b2):  # noqa: N803
        return torch.mean((pred(W1, b1, W2, b2) - t["t"]) ** 2)

    def hvp():
        return tjvp(tgrad(loss, argnums=(0, 1, 2, 3)), params, tans)[1]

    def batched():
        _, fn = tvjp(pred, *params)
        return vmap(fn)(tseeds)

    with torch.no_grad():
        return {"torch.func: forward": lambda: loss(*params),
                "torch.func: jvp": lambda: tjvp(loss, params, tans),
                "torch.func: hvp (jvp of grad)": hvp,
                f"torch.func: vmap(vjp), {K} cotangents": batched}


def bench_derivatives(timer: Timer, use_torch: bool) -> list[str]:
    cases, info = derivative_cases(use_torch)
    t = timer.compare({name: timer.local(fn) for name, fn in cases.items()})
    med = {name: r["median"] for name, r in t.items()}
    base = med["forward pass"]
    rows = [(name, f"{r['median'] * 1e3:.3f}", pct(r["spread"]), f"{r['median'] / base:.2f}")
            for name, r in t.items()]
    out = ["(5) derivatives of the MLP of (2), float32 (x forward = time / the forward pass)",
           table(("case", "ms", "spread", "x forward"), rows, (42, 10, 9, 11)),
           verdict("HVP vs the gradient (issue 10)",
                   med["HVP, of loss wrt W1 b1 W2 b2"] / med["gradient (forward + backward)"],
                   "<=", 4.0),
           verdict("JVP vs the forward pass (issue 10)",
                   med["JVP, tangents on W1 b1 W2 b2"] / base, "<=", 2.5),
           verdict(f"{K} batched cotangents vs {K} gradient runs (issue 10)",
                   med[f"{K} cotangents of p in one batch"]
                   / med[f"{K} gradient runs of p, one seed each"], "<=", 0.5)]
    if info["torch"]:
        tf = med["torch.func: forward"]
        for ours, theirs in (("JVP, tangents on W1 b1 W2 b2", "torch.func: jvp"),
                             ("HVP, of loss wrt W1 b1 W2 b2", "torch.func: hvp (jvp of grad)"),
                             (f"{K} cotangents of p in one batch",
                              f"torch.func: vmap(vjp), {K} cotangents")):
            out.append(f"  {ours}: {med[ours] / base:.2f}x our forward; {theirs}: "
                       f"{med[theirs] / tf:.2f}x torch's forward; ours / torch's "
                       f"{med[ours] / med[theirs]:.2f}")
    return out


# ---- 6. per-example gradients (vmap) ------------------------------------------------------

ROWS = 256


def vmap_cases(use_torch: bool) -> dict[str, Callable[[], object]]:
    a = mlp_arrays()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((ROWS, 784)).astype(np.float32)
    t = rng.standard_normal((ROWS, 10)).astype(np.float32)
    params = {k: a[k] for k in MLP_PARAMS}
    ordinary = {"x": x, "t": t, **params}
    per_row = {"x": x.reshape(ROWS, 1, 784), "t": t.reshape(ROWS, 1, 10), **params}
    mean = autograd.plan(MLP_NODES, {k: Leaf(v.shape, k in MLP_PARAMS) for k, v in
                                     ordinary.items()}, outputs=["loss"],
                         grad={"of": "loss", "wrt": list(MLP_PARAMS)})
    each = autograd.plan(MLP_NODES, {k: Leaf(v.shape, k in MLP_PARAMS) for k, v in
                                     per_row.items()}, outputs=["loss"],
                         grad={"of": "loss", "wrt": list(MLP_PARAMS)}, vmap=["x", "t"])
    got = each.run(per_row).gradients
    # the mean of the per-example gradients of mean-over-10 losses is the ordinary gradient
    check("per-example gradients against the mean-loss gradient", got["W1"].mean(axis=0),
          mean.run(ordinary).gradients["W1"], 1e-3, 1e-6)
    cases = {"mean-loss gradient over the rows (baseline)": lambda: mean.run(ordinary),
             f"per-example gradients, vmap over {ROWS} rows": lambda: each.run(per_row)}
    torch = _torch() if use_torch else None
    if torch is not None:
        from torch.func import grad, vmap
        tx, tt = torch.from_numpy(per_row["x"]), torch.from_numpy(per_row["t"])
        tp = tuple(torch.from_numpy(a[k]) for k in MLP_PARAMS)

        def loss(W1, b1, W2, b2, x, t):  # noqa: N803
            return torch.mean((torch.relu(x @ W1 + b1) @ W2 + b2 - t) ** 2)

        per_example = vmap(grad(loss, argnums=(0, 1, 2, 3)), in_dims=(None,) * 4 + (0, 0))
        cases["torch.func: vmap(grad), per example"] = lambda: per_example(*tp, tx, tt)
    return cases


def bench_vmap(timer: Timer, use_torch: bool) -> list[str]:
    cases = vmap_cases(use_torch)
    t = timer.compare({name: timer.local(fn) for name, fn in cases.items()})
    base = t["mean-loss gradient over the rows (baseline)"]["median"]
    rows = [(name, f"{r['median'] * 1e3:.3f}", pct(r["spread"]), f"{r['median'] / base:.2f}")
            for name, r in t.items()]
    ours = t[f"per-example gradients, vmap over {ROWS} rows"]["median"]
    out = [f"(6) per-example gradients of the MLP of (2) over {ROWS} rows, float32 (every "
           f"gradient is ({ROWS}, *shape): {ROWS * 784 * 256 * 4 / 1e6:.0f} MB for W1 alone)",
           table(("case", "ms", "spread", "x mean"), rows, (46, 10, 9, 9)),
           verdict("per-example vs mean-loss gradient (issue 15)", ours / base, "<=", 2.0)]
    torch_name = "torch.func: vmap(grad), per example"
    if torch_name in t:
        out.append(f"  ours / torch.func's: {ours / t[torch_name]['median']:.2f}")
    return out


# ---- 7. the ops of PROTOCOL §2.1 ------------------------------------------------------

V1_ELEMENTWISE = {"exp": [], "sin": [], "tanh": [], "sigmoid": [], "relu": [], "mul": [1.001]}
NEW_ELEMENTWISE = {"square": [], "log1p": [], "expm1": [], "softplus": [], "log_sigmoid": [],
                   "div": [1.001], "maximum": [0.1], "minimum": [0.9], "greater": [0.0],
                   "clip": [], "where": None}


def op_chain(op: str, literals, n: int) -> list[dict]:
    """n nodes of one op, each reading the one before (and number literals)."""
    nodes, prev = [], "x"
    for k in range(n):
        args = ["c", prev, 0.5] if op == "where" else [prev, *literals]
        node = {"id": f"n{k}", "op": op, "args": args}
        if op == "clip":
            node["attrs"] = {"min": -0.5, "max": 0.5}
        nodes.append(node)
        prev = f"n{k}"
    return nodes


def bench_op_chains(timer: Timer, n: int) -> list[str]:
    x0 = np.linspace(-0.9, 0.9, 8, dtype=np.float32)
    seed = np.ones(8, np.float32)
    cases = {}
    for op, literals in {**V1_ELEMENTWISE, **NEW_ELEMENTWISE}.items():
        nodes = op_chain(op, literals, n)
        grad = {"of": nodes[-1]["id"], "wrt": ["x"]}
        # where's cond is an input without a gradient, as it usually is
        planned = autograd.plan(nodes, {"x": Leaf((8,), True), "c": Leaf((8,))},
                                outputs=[grad["of"]], grad=grad, seed_shape=(8,))
        cases[op] = (lambda p: lambda: p.run({"x": x0, "c": x0 > 0}, seed))(planned)
    t = timer.compare({name: timer.local(fn) for name, fn in cases.items()})
    per = {op: r["median"] / n * 1e6 for op, r in t.items()}
    v1 = [per[op] for op in V1_ELEMENTWISE]
    rows = [(op, "v1" if op in V1_ELEMENTWISE else "v1.1", f"{per[op]:.2f}",
             pct(t[op]["spread"]), f"{per[op] / statistics.mean(v1):.2f}") for op in per]
    new = [per[op] for op in NEW_ELEMENTWISE]
    return [f"(7a) per-node cost of one op: forward+backward through a chain of {n} nodes of "
            "it on shape (8,), float32, plan once then plan.run",
            table(("op", "set", "µs/node", "spread", "x v1 mean"), rows, (20, 6, 10, 9, 11)),
            verdict("v1.1 elementwise mean vs v1's mean per node (issue 11)",
                    statistics.mean(new) / statistics.mean(v1), "<=", 1.0),
            verdict("slowest v1.1 elementwise op vs slowest v1 op per node (issue 11)",
                    max(new) / max(v1), "<=", 1.0)]


def einsum_cases() -> dict[str, Callable[[], object]]:
    """x @ W1 of the MLP as einsum: forward and both gradients."""
    arrays = mlp_arrays()
    x, w = arrays["x"], arrays["W1"]
    g = np.ones((64, 256), np.float32)
    path = ["einsum_path", (0, 1)]

    def numpy_einsum():
        y = np.einsum("ij,jk->ik", x, w, optimize=path)
        return y, np.einsum("ik,jk->ij", g, w, optimize=path), np.einsum(
            "ik,ij->jk", g, x, optimize=path)

    nodes = [{"id": "y", "op": "einsum", "args": ["x", "w"], "attrs": {"equation": "ij,jk->ik"}}]
    planned = autograd.plan(nodes, {"x": Leaf(x.shape, True), "w": Leaf(w.shape, True)},
                            outputs=["y"], grad={"of": "y", "wrt": ["x", "w"]},
                            seed_shape=g.shape)
    y, gx, gw = numpy_einsum()
    got = planned.run({"x": x, "w": w}, g)
    check("einsum's value", got.outputs["y"], y, 1e-5, 1e-5)
    check("einsum's gradient of x", got.gradients["x"], gx, 1e-5, 1e-5)
    check("einsum's gradient of W1", got.gradients["w"], gw, 1e-5, 1e-4)
    return {"numpy.einsum, same path (baseline)": numpy_einsum,
            "plan once, then plan.run": lambda: planned.run({"x": x, "w": w}, g)}


def normaliser_cases(op: str) -> dict[str, Callable[[], object]]:
    """logsumexp or log_softmax along the last axis of 4M float32, value and gradient."""
    x = big_input().reshape(4096, 1024) * np.float32(30)
    shape = (4096,) if op == "logsumexp" else x.shape
    g = np.ones(shape, np.float32)

    def numpy_stable():
        m = x.max(axis=-1, keepdims=True)
        s = x - m
        e = np.exp(s)
        total = e.sum(axis=-1, keepdims=True)
        if op == "logsumexp":
            return (np.log(total) + m)[:, 0], e / total
        y = s - np.log(total)
        return y, g - np.exp(y) * g.sum(axis=-1, keepdims=True)

    nodes = [{"id": "y", "op": op, "args": ["x"], "attrs": {"axis": -1}}]
    planned = autograd.plan(nodes, {"x": Leaf(x.shape, True)}, outputs=["y"],
                            grad={"of": "y", "wrt": ["x"]}, seed_shape=shape)
    y, gx = numpy_stable()
    got = planned.run({"x": x}, g)
    check(f"{op}'s value", got.outputs["y"], y, 1e-5, 1e-4)
    check(f"{op}'s gradient", got.gradients["x"], gx, 1e-4, 1e-5)
    return {"hand-written stable NumPy (baseline)": numpy_stable,
            "plan once, then plan.run": lambda: planned.run({"x": x}, g)}


def bench_v11_kernels(timer: Timer) -> list[str]:
    out = []
    for title, cases, limit in (
            ("(7b) einsum \"ij,jk->ik\", x 64x784 and W1 784x256 of the MLP, value and both "
             "gradients, float32", einsum_cases(), 1.2),
            ("(7c) logsumexp along the last axis of 4096x1024 float32, value and gradient",
             normaliser_cases("logsumexp"), 1.3),
            ("(7d) log_softmax along the last axis of 4096x1024 float32, value and gradient",
             normaliser_cases("log_softmax"), 1.3)):
        t = timer.compare({name: timer.local(fn) for name, fn in cases.items()})
        base = next(iter(t.values()))["median"]
        out += [title, table(("case", "ms", "spread", "x NumPy"),
                             [(name, f"{r['median'] * 1e3:.3f}", pct(r["spread"]),
                               f"{r['median'] / base:.2f}") for name, r in t.items()],
                             (40, 10, 9, 10)),
                verdict(f"{title.split(' ')[1]} plan.run vs the NumPy baseline (issue 11)",
                        t["plan once, then plan.run"]["median"] / base, "<=", limit)]
    return out


# ---- main ------------------------------------------------------------------------------

def header(args) -> list[str]:
    torch = _torch() if args.torch else None
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    return [f"gradserve engine bench, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
            f"  Python {platform.python_version()}, NumPy {np.__version__}, "
            f"torch {torch.__version__ if torch else 'not importable'}, "
            f"BLAS threads {blas}, repeats {args.repeats}, ~{args.budget:g} s per sample",
            f"  times are medians by {args.clock} clock ({CLOCK_DOC[args.clock]}); "
            "spread = interquartile range / median"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (~20 s)")
    ap.add_argument("--only", default="chain,mlp,elementwise,memory,derivatives,vmap,ops",
                    help="comma-separated sections: chain, mlp, elementwise, memory, "
                         "derivatives, vmap, ops")
    ap.add_argument("--nodes", type=int, default=1000, help="length of the chain in (1)")
    ap.add_argument("--no-torch", dest="torch", action="store_false",
                    help="leave PyTorch out even when importable")
    ap.add_argument("--repeats", type=int, help="samples per case (default 15, quick 5)")
    ap.add_argument("--budget", type=float, help="seconds per sample (default 0.08, quick 0.03)")
    ap.add_argument("--clock", choices=CLOCKS, default="cpu",
                    help="cpu: this process's CPU time, which a busy neighbour disturbs less; "
                         "wall: elapsed time")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        serve_child(args.child, args.clock)
        return
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.budget = args.budget or (0.03 if args.quick else 0.08)
    timer = Timer(args.repeats, args.budget, args.clock)

    only = args.only.split(",")
    unknown = set(only) - {"chain", "memory", "derivatives", "vmap", "ops", *SECTIONS}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    t0 = time.monotonic()
    print("\n".join(header(args)), flush=True)
    if "chain" in only:
        print("\n" + "\n".join(bench_chain(timer, args.nodes, args.torch)), flush=True)
    for section in SECTIONS:
        if section in only:
            print("\n" + "\n".join(bench_in_children(timer, section, args.clock)), flush=True)
    if "mlp" in only or "elementwise" in only:
        print("  (each [malloc] runs in a fresh process; malloc raised = "
              + " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items()) + ")")
    if "memory" in only:
        print("\n" + "\n".join(bench_memory()), flush=True)
    if "derivatives" in only:
        print("\n" + "\n".join(bench_derivatives(timer, args.torch)), flush=True)
    if "vmap" in only:
        print("\n" + "\n".join(bench_vmap(timer, args.torch)), flush=True)
    if "ops" in only:
        print("\n" + "\n".join(bench_op_chains(timer, args.nodes)), flush=True)
        print("\n" + "\n".join(bench_v11_kernels(timer)), flush=True)
    flags = ["--quick" if args.quick else "",
             f"--only {args.only}" if args.only != ap.get_default("only") else "",
             "--clock wall" if args.clock == "wall" else "",
             "" if args.torch else "--no-torch"]
    rerun = " ".join(["python bench/engine.py", *filter(None, flags)])
    print(f"\ntook {time.monotonic() - t0:.0f} s; rerun: {rerun}")


if __name__ == "__main__":
    main()
