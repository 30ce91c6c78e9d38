"""examples/: curl, Node.js and Python against a real gunicorn print the same, right numbers;
the curl jvp and the Newton-CG examples print the right derivatives and optimum."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_client import F32, X, reference

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(grad )?(\w+) = (.+)$")


def run(argv: list[str], url: str) -> subprocess.CompletedProcess:
    """An example as a user runs it, with only GRADSERVE_URL set."""
    tool = shutil.which(argv[0])
    assert tool, f"{argv[0]} is not installed; the examples need it (do not skip)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    env.update(GRADSERVE_URL=url, PYTHONPATH=str(ROOT))
    return subprocess.run([tool, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def from_lines(out: str) -> dict[str, np.ndarray]:
    """`loss = 0.77`, `grad w = [[...]]` lines as {"loss": ..., "w": ...} (gradients by id)."""
    found = {}
    for line in out.splitlines():
        m = LINE.match(line)
        assert m, f"unexpected line {line!r}"
        found[m[2]] = np.array(json.loads(m[3]))
    return found


def from_response(out: str) -> dict[str, np.ndarray]:
    body = json.loads(out)
    return {k: np.array(t["data"]) for part in ("outputs", "gradients")
            for k, t in body[part].items()}


EXAMPLES = {
    "curl": (["bash", "examples/curl.sh"], from_response),
    "node": (["node", "examples/node/evaluate.mjs"], from_lines),
    "python": ([sys.executable, "examples/python/quickstart.py"], from_lines),
}


README = (ROOT / "README.md").read_text()


def without_timings(body: dict) -> dict:
    return {**body, "stats": {k: v for k, v in body["stats"].items() if not k.endswith("_ms")}}


def shown_in_readme(name: str, out: str) -> bool:
    """The README shows this output: curl's JSON (wrapped, timings aside), else the lines."""
    blocks = re.findall(r"```(\w*)\n(.*?)```", README, re.DOTALL)
    if name == "curl":
        printed = without_timings(json.loads(out))
        return any(without_timings(json.loads(text)) == printed
                   for lang, text in blocks if lang == "json" and '"stats"' in text)
    return any(text == out for lang, text in blocks if lang == "")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_prints_the_values_and_gradients(server, name):
    argv, parse = EXAMPLES[name]
    done = run(argv, server.url)
    assert done.returncode == 0, done.stderr
    assert shown_in_readme(name, done.stdout), f"README.md does not show:\n{done.stdout}"
    printed = parse(done.stdout)
    ref = reference()
    assert sorted(printed) == ["a", "b", "loss", "w"]
    for key in printed:
        np.testing.assert_allclose(printed[key], ref[key], **F32, err_msg=f"{name}: {key}")
        assert printed[key].shape == np.shape(ref[key])


def test_the_readme_runs_python_examples_with_the_virtualenvs_python():
    runs = re.findall(r"(\S+) examples/python/\w+\.py", README)
    assert runs and set(runs) == {".venv/bin/python"}


def test_the_curl_example_sends_protocol_section_1(example):
    script = (ROOT / "examples/curl.sh").read_text()
    sent = json.loads(script.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0])
    assert sent == example


def test_the_curl_jvp_example_prints_values_and_directional_derivatives(server):
    done = run(["bash", "examples/curl-jvp.sh"], server.url)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    a = reference()["a"]
    da = a * (1 - a) * (X @ [[1.0], [2.0]])  # along the tangent [[1], [2]] of w
    assert set(body) == {"outputs", "gradients", "jvp", "warnings", "stats"}
    np.testing.assert_allclose(body["outputs"]["a"]["data"], a, **F32)
    np.testing.assert_allclose(body["jvp"]["a"]["data"], da, **F32)
    np.testing.assert_allclose(body["jvp"]["loss"]["data"], da.mean(), **F32)
    assert body["jvp"]["a"]["shape"] == [2, 1] and body["jvp"]["loss"]["shape"] == []


def newton_module():
    spec = importlib.util.spec_from_file_location("newton", ROOT / "examples/python/newton.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the data and the loss; main() is not run
    return module


def test_the_newton_example_finds_the_optimum_gradient_descent_finds(server):
    done = run([sys.executable, "examples/python/newton.py"], server.url)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    newton, descent = (np.array(json.loads(lines[k])) for k in ("newton w", "descent w"))
    np.testing.assert_allclose(newton, descent, atol=1e-6)
    hvps = re.search(r"newton-cg: (\d+) iterations, (\d+) hessian-vector products", done.stdout)
    assert hvps and int(hvps[2]) >= int(hvps[1]) >= 2
    # the optimum, checked in NumPy on the example's own data: the gradient vanishes there
    m = newton_module()
    x, y = m.make_data()
    p = 1 / (1 + np.exp(-x @ descent[:, None]))
    grad = x.T @ (p - y) / len(x) + 2 * m.LAM * descent[:, None]
    assert np.abs(grad).max() < 1e-8


SCRIPTS = {**{name: argv for name, (argv, _) in EXAMPLES.items()},
           "curl-jvp": ["bash", "examples/curl-jvp.sh"],
           "newton": [sys.executable, "examples/python/newton.py"]}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_an_example_reports_a_refusal_and_fails(server, name):
    done = run(SCRIPTS[name], server.url + "/not-here")  # every path below it is a 404
    assert done.returncode != 0
    assert "not_found" in done.stdout + done.stderr


# ---- training examples: the §2.1 losses from the SDK and from Node ----------------------

def _softmax_classifier():
    """examples/python/softmax_classifier.py's loop in NumPy."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = np.array([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])[labels] + rng.normal(
        scale=0.7, size=(60, 2))
    t = np.eye(3)[labels]
    w, b, losses = np.zeros((2, 3)), np.zeros(3), []
    for i in range(41):
        z = x @ w + b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        losses.append(-np.sum(t * np.log(p)) / 60)
        if i < 40:
            d = (p - t) / 60
            w, b = w - 0.5 * x.T @ d, b - 0.5 * d.sum(axis=0)
    return {"loss_start": losses[0], "loss_end": losses[-1], "W": w, "b": b,
            "accuracy": np.mean(z.argmax(axis=1) == labels)}


def _logistic_regression():
    """examples/node/logistic_regression.mjs's loop in NumPy."""
    x = np.array([[i, j] for i in range(-3, 4) for j in range(-3, 4)], dtype=float)
    t = (x[:, :1] + 2 * x[:, 1:] > 1).astype(float)
    w, b, losses = np.zeros((2, 1)), np.zeros(1), []
    for i in range(61):
        z = x @ w + b
        losses.append(np.mean(np.logaddexp(0, z) - z * t))
        if i < 60:
            d = (1 / (1 + np.exp(-z)) - t) / z.size
            w, b = w - x.T @ d, b - d.sum(axis=0)
    return {"loss_start": losses[0], "loss_end": losses[-1], "w": w, "b": b,
            "accuracy": np.mean((z > 0) == (t > 0))}


TRAINING = {
    "python softmax classifier": ([sys.executable, "examples/python/softmax_classifier.py"],
                                  _softmax_classifier),
    "node logistic regression": (["node", "examples/node/logistic_regression.mjs"],
                                 _logistic_regression),
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_a_training_example_learns_what_numpy_learns(server, name):
    argv, reference_loop = TRAINING[name]
    done = run(argv, server.url)
    assert done.returncode == 0, done.stderr
    printed, ref = from_lines(done.stdout), reference_loop()
    assert sorted(printed) == sorted(ref)
    assert printed["loss_end"] < 0.5 * printed["loss_start"]
    assert printed["accuracy"] >= 0.9
    for key in printed:
        np.testing.assert_allclose(printed[key], ref[key], rtol=1e-6, atol=1e-9, err_msg=key)


def test_the_readme_one_line_expr_curl_gives_the_protocol_numbers(server):
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("curl ") and '"expr"' in x)
    done = run(["bash", "-c", line.replace("http://127.0.0.1:8000", server.url)], server.url)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    ref = reference()
    assert list(body["outputs"]) == ["loss"] and list(body["gradients"]) == ["w", "b"]
    np.testing.assert_allclose(body["outputs"]["loss"]["data"], ref["loss"], **F32)
    for name in ("w", "b"):
        np.testing.assert_allclose(body["gradients"][name]["data"], ref[name], **F32)


def test_the_training_example_fits_its_line(server):
    """examples/python/train.py: gradient descent through the server finds w and b."""
    done = run([sys.executable, "examples/python/train.py"], server.url)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
    losses = [float(v) for k, v in lines.items() if k.startswith("step")]
    assert losses[-1] < 1e-4 * losses[0]
    np.testing.assert_allclose(json.loads(lines["w"]), [2.0, -1.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(json.loads(lines["b"]), [0.3], atol=1e-3)


def test_per_example_gradients_in_one_request(server):
    """examples/python/per_example.py: 1,000 rows in one vmap request, each row's gradient
    norm equal to a request of its own (the example asserts it for five rows)."""
    done = run([sys.executable, "examples/python/per_example.py"], server.url)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
    assert int(lines["rows"]) == 1000 and int(lines["checked"]) == 5
    assert 0 < float(lines["norm_min"]) < float(lines["norm_max"])
