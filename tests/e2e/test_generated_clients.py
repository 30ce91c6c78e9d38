"""Typed clients generated from the live GET /openapi.json, used against a real gunicorn.

Three generators, as a user in another language would run them: openapi-python-client,
openapi-generator (`-g python`, PyPI's openapi-generator-cli on Java) and openapi-typescript
with openapi-fetch (npm, compiled by tsc --strict, run by Node). Each generates once per
module into a temporary folder, without a warning about the document; each client then sends
PROTOCOL.md §1 with its tensors in every form (nested, flat, base64, answered in the same),
a body whose answer holds all three non-finite strings, and one that is refused; it must read
back the right numbers, and the refusal as a typed problem body.

Java and Node are installed with apt-get when missing; the npm packages go to a cache folder
(.pytest_cache/npm-clients) at the versions pinned below.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from client import codec
from tests.conftest import EXAMPLE
from tests.e2e.test_client import F32, B, W, X, reference
from tests.e2e.test_deploy import apt_get

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NPM_CACHE = ROOT / ".pytest_cache" / "npm-clients"
NPM_PACKAGES = {"openapi-typescript": "7.13.0", "openapi-fetch": "0.17.0",
                "typescript": "5.9.3", "@types/node": "20.19.43"}
# openapi-generator says these of every document, even a one-schema 3.0 one: not about ours.
GENERATOR_NOISE = ("OpenAPI 3.1 support is still in beta", "Failed to get the schema name: null")

FORMS = ("nested", "flat", "base64")
NONFINITE = {"inputs": {"x": {"data": [-1, 0, "Infinity"]}},
             "nodes": [{"id": "y", "op": "log", "args": ["x"]}]}
REFUSED = {**EXAMPLE, "grad": {"of": "loss", "wrt": ["w", "nope"]}}
WRONG = {  # bodies the TypeScript types must refuse, and why
    "an op the document does not list": {**NONFINITE, "nodes": [
        {"id": "y", "op": "sigmod", "args": ["x"]}]},
    "tensor data that is a string": {**NONFINITE, "inputs": {"x": {"data": "1"}}},
    "a member the document does not have": {**NONFINITE, "extra": 1},
}


def tensor(a: np.ndarray, form: str) -> dict:
    """One input tensor in one of the three forms of PROTOCOL.md §3."""
    if form == "nested":
        return {"data": a.tolist()}
    if form == "flat":
        return {"shape": list(a.shape), "data": a.ravel().tolist()}
    return {"shape": list(a.shape), "dtype": "float32",
            "b64": base64.b64encode(a.astype("<f4").tobytes()).decode()}


def bodies() -> dict[str, dict]:
    """What every client sends: §1 in each form, the non-finite case, the refused one."""
    out = {}
    for form in FORMS:
        body = json.loads(json.dumps(EXAMPLE))
        body["inputs"] = {"x": tensor(X, form), "w": {**tensor(W, form), "requires_grad": True},
                          "b": tensor(B, form)}
        body["encoding"] = form
        out[form] = body
    return {**out, "nonfinite": NONFINITE, "refused": REFUSED}


def check(answers: dict) -> None:
    """Each client's answers: {name: {id or "grad id": array}} or {name: (status, problem)}."""
    ref = reference()
    want = {"loss": ref["loss"], "a": ref["a"], "grad w": ref["w"], "grad b": ref["b"]}
    for form in FORMS:
        got = answers[form]
        assert sorted(got) == sorted(want), form
        for key, value in want.items():
            assert got[key].shape == np.shape(value), (form, key)
            np.testing.assert_allclose(got[key], value, **F32, err_msg=f"{form}: {key}")
    np.testing.assert_array_equal(answers["nonfinite"]["y"], [np.nan, -np.inf, np.inf])
    status, problem = answers["refused"]
    assert status == 422 and problem["status"] == 422 and problem["code"] == "unknown_id"
    assert problem["errors"][0]["pointer"] == "/grad/wrt/1"


def run(argv: list, cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}:\n{out[-4000:]}"
    return out


def ensure_tool(tool: str, package: str) -> str:
    """A program on PATH, installed from Debian's packages when missing (CI runs as root)."""
    if not shutil.which(tool) and apt_get("install", "-y", "-q", package).returncode != 0:
        apt_get("update", "-q")  # perhaps stale package lists
        apt_get("install", "-y", "-q", package)
    found = shutil.which(tool)
    assert found, f"{tool} is needed and `apt-get install {package}` did not bring it"
    return found


def plain(v):
    """An enum member as its value (generated clients wrap "float32", "NaN" in enums)."""
    return getattr(v, "value", v)


def decoded(outputs: dict, gradients: dict, data) -> dict[str, np.ndarray]:
    """Typed response tensors as arrays; `data(t)` reads a tensor's data the client's way."""
    tensors = {**outputs, **{f"grad {k}": t for k, t in gradients.items()}}
    out = {}
    for key, t in tensors.items():
        wire = {"shape": list(t.shape), "dtype": plain(t.dtype)}
        if t.b64:
            wire["b64"] = t.b64
        else:
            d = plain(data(t))
            wire["data"] = [plain(v) for v in d] if isinstance(d, list) else d
        out[key] = codec.decode(wire)
    return out


def without_nulls(v):
    if isinstance(v, dict):
        return {k: without_nulls(x) for k, x in v.items() if x is not None}
    return [without_nulls(x) for x in v] if isinstance(v, list) else v


# ---- the document and the generators ---------------------------------------------------

@pytest.fixture(scope="module")
def document(server, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    r = requests.get(server.url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    path.write_bytes(r.content)
    return path


def load_package(folder: Path, name: str):
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def python_client(document):
    """openapi-python-client's package, `gradserve_opc`."""
    folder = document.parent / "opc"
    folder.mkdir()
    config = folder / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: generated code as it comes
    out = run([BIN / "openapi-python-client", "generate", "--path", document, "--meta", "none",
               "--output-path", folder / "gradserve_opc", "--config", config], folder)
    assert "warning" not in out.lower(), out
    return load_package(folder, "gradserve_opc")


@pytest.fixture(scope="module")
def generator_client(document):
    """openapi-generator's `-g python` package, `gradserve_og`."""
    ensure_tool("java", "openjdk-17-jre-headless")
    folder = document.parent / "og"
    out = run([BIN / "openapi-generator-cli", "generate", "-i", document, "-g", "python",
               "-o", folder, "--package-name", "gradserve_og"], document.parent)
    warnings = [line for line in out.splitlines() if re.search(r"\b(WARN|ERROR)\b", line)
                and not any(noise in line for noise in GENERATOR_NOISE)]
    assert not warnings, "\n".join(warnings)
    return load_package(folder, "gradserve_og")


@pytest.fixture(scope="module")
def npm_packages() -> Path:
    """node_modules with the pinned packages, installed into the cache folder when missing."""
    ensure_tool("node", "nodejs")
    npm = ensure_tool("npm", "npm")
    modules = NPM_CACHE / "node_modules"

    def installed(name: str) -> str | None:
        meta = modules / name / "package.json"
        return json.loads(meta.read_text())["version"] if meta.exists() else None

    if any(installed(name) != version for name, version in NPM_PACKAGES.items()):
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        (NPM_CACHE / "package.json").write_text('{"private": true}\n')
        run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
             *(f"{name}@{version}" for name, version in NPM_PACKAGES.items())], NPM_CACHE,
            timeout=600)
    return modules


@pytest.fixture(scope="module")
def typescript_client(document, npm_packages) -> Path:
    """A folder with openapi-typescript's types, tests/e2e/clients/evaluate.ts and the bodies,
    compiled by tsc --strict."""
    folder = document.parent / "ts"
    folder.mkdir()
    (folder / "node_modules").symlink_to(npm_packages)
    (folder / "package.json").write_text('{"type": "module"}\n')
    tools = npm_packages / ".bin"
    out = run([tools / "openapi-typescript", document, "-o", folder / "schema.d.ts"], folder)
    assert not re.search(r"warn|⚠", out, re.IGNORECASE), out
    shutil.copy(ROOT / "tests/e2e/clients/evaluate.ts", folder)
    (folder / "bodies.ts").write_text(
        'import type { components } from "./schema.js";\n\n'
        'type Body = components["schemas"]["EvaluateRequest"];\n'
        f"export const bodies: Record<string, Body> = {json.dumps(bodies(), indent=2)};\n\n"
        "// The types are not `any`: tsc fails on an unused @ts-expect-error.\n"
        + "".join(f"// @ts-expect-error: {why}\nexport const wrong{k}: Body = {json.dumps(b)};\n"
                  for k, (why, b) in enumerate(WRONG.items())))
    run([tools / "tsc", "--strict", "--target", "es2022", "--module", "nodenext",
         "--moduleResolution", "nodenext", "--types", "node", "evaluate.ts", "bodies.ts"], folder)
    return folder


# ---- each client against the server ----------------------------------------------------

def test_openapi_python_client(python_client, server):
    pkg = python_client
    evaluate = importlib.import_module(f"{pkg.__name__}.api.default.evaluate")
    models = importlib.import_module(f"{pkg.__name__}.models")
    answers = {}
    with pkg.Client(base_url=server.url, timeout=30) as c:
        for name, body in bodies().items():
            request = models.EvaluateRequest.from_dict(body)
            assert request.to_dict() == body  # what it sends is the body, inputs and all
            response = evaluate.sync_detailed(client=c, body=request)
            r = response.parsed
            if isinstance(r, models.Problem):
                answers[name] = (response.status_code, r.to_dict())
            else:
                assert isinstance(r, models.EvaluateResponse), response.content[:300]
                assert all(isinstance(w, models.NumericWarning) for w in r.warnings)
                answers[name] = decoded(r.outputs.additional_properties,
                                        r.gradients.additional_properties, lambda t: t.data)
    check(answers)


def test_openapi_generator_python(generator_client, server):
    pkg = generator_client
    answers = {}
    with pkg.ApiClient(pkg.Configuration(host=server.url)) as api_client:
        api = pkg.DefaultApi(api_client)
        for name, body in bodies().items():
            request = pkg.EvaluateRequest.from_dict(body)
            assert without_nulls(request.to_dict()) == body  # it writes absent members as null
            try:
                r = api.evaluate(request)
            except pkg.ApiException as e:
                assert isinstance(e.data, pkg.Problem), e.body
                answers[name] = (e.status, e.data.to_dict())
                continue
            assert isinstance(r, pkg.EvaluateResponse)
            answers[name] = decoded(r.outputs, r.gradients,
                                    lambda t: t.data.actual_instance if t.data else None)
    check(answers)


def test_openapi_typescript_with_openapi_fetch(typescript_client, server):
    node = shutil.which("node")
    printed = json.loads(run([node, "evaluate.js", server.url], typescript_client))
    answers = {}
    for name, got in printed.items():
        if "problem" in got:
            answers[name] = (got["status"], got["problem"])
        else:
            answers[name] = {k: np.reshape(np.array(t["values"], float), t["shape"])
                             for k, t in got.items()}
    check(answers)

