"""examples/: curl, Node.js and Python against a real gunicorn print the same, right numbers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_client import F32, reference

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


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_reports_a_refusal_and_fails(server, name):
    done = run(EXAMPLES[name][0], server.url + "/not-here")  # every path below it is a 404
    assert done.returncode != 0
    assert "not_found" in done.stdout + done.stderr


def test_the_training_example_fits_its_line(server):
    """examples/python/train.py: gradient descent through the server finds w and b."""
    done = run([sys.executable, "examples/python/train.py"], server.url)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
    losses = [float(v) for k, v in lines.items() if k.startswith("step")]
    assert losses[-1] < 1e-4 * losses[0]
    np.testing.assert_allclose(json.loads(lines["w"]), [2.0, -1.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(json.loads(lines["b"]), [0.3], atol=1e-3)
