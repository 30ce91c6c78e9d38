"""The deployment files, parsed and checked against each other and against the service.

No Docker engine or Kubernetes runs here, so what can be checked is checked from the files:
the Dockerfile's user, health check and CMD; docker-compose.yml's replicas and settings;
deploy/nginx.conf's body limit, retries and timeouts; the k8s probes and resources. Where
a number must agree with the service (body limit, timeouts, memory), it is computed by the
service's own Settings and gunicorn.conf.py under that file's environment.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent

# ---- readers ----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as (INSTRUCTION, arguments) pairs, one list per FROM."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def instructions(stage, name: str) -> list[str]:
    return [rest for word, rest in stage if word == name]


NGINX_TOKEN = re.compile(r"""'[^']*'|"[^"]*"|#[^\n]*|[{};]|[^\s{};'"#]+""")


def nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """(enclosing blocks, name, args) for every simple directive of an nginx config."""
    out, words, blocks = [], [], []
    for token in NGINX_TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            out.append((tuple(blocks), words[0], words[1:]))
            words = []
        elif token == "{":
            blocks.append(" ".join(words))
            words = []
        elif token == "}":
            blocks.pop()
        else:
            words.append(token)
    return out


def nginx(name: str, block: str | None = None) -> list[list[str]]:
    """The args of each `name` directive in deploy/nginx.conf, within `block` if given."""
    found = nginx_directives((ROOT / "deploy" / "nginx.conf").read_text())
    return [args for blocks, n, args in found if n == name and (block is None or block in blocks)]


UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def size(text: str) -> int:
    """A byte size as nginx ("256m"), Docker ("4352M") or Kubernetes ("4352Mi") writes it:
    all three mean binary multiples."""
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text)).groups()
    return int(number) * UNITS[unit.lower()]


def seconds(text: str | int) -> float:
    number, unit = re.fullmatch(r"(\d+)(s|m|)", str(text)).groups()
    return int(number) * (60 if unit == "m" else 1)


def cpus(text: str) -> float:
    return int(text[:-1]) / 1000 if str(text).endswith("m") else float(text)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def default(value) -> str:
    """What compose makes of "${VAR:-default}" when VAR is unset."""
    m = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    return m[1] if m else str(value)


def k8s(kind: str) -> dict:
    docs = [d for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def container() -> dict:
    (c,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def compose_env() -> dict[str, str]:
    return {k: default(v) for k, v in compose()["x-gradserve-env"].items()}


def k8s_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def gunicorn_config(env: dict[str, str], tmp_path: Path, monkeypatch) -> dict:
    """service/gunicorn.conf.py as gunicorn reads it under `env`: its settings by name."""
    monkeypatch.setattr(os, "environ", {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    return runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"))


def as_fields(env: dict[str, str]) -> dict[str, str]:
    """GRADSERVE_MAX_NODES=... as Settings' field max_nodes=..."""
    return {k.removeprefix("GRADSERVE_").lower(): v for k, v in env.items()}


def bind_port(env: dict[str, str]) -> int:
    return int(env["GRADSERVE_BIND"].rpartition(":")[2])


# ---- Dockerfile -------------------------------------------------------------------------

FINAL = dockerfile_stages()[-1]


def test_dockerfile_is_multi_stage_on_slim_python_311_with_no_build_tools_left():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert re.match(r"python:3\.11-slim", stage[0][1])
    assert any("pip install" in run for stage in stages[:-1] for run in instructions(stage, "RUN"))
    final_runs = " ".join(instructions(FINAL, "RUN"))
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in final_runs
    assert any("--from=" in c for c in instructions(FINAL, "COPY"))


def test_dockerfile_runs_as_a_numeric_non_root_user():
    (user,) = instructions(FINAL, "USER")
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0
    pod = k8s("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] == int(uid)


def dockerfile_env() -> dict[str, str]:
    return dict(kv.split("=", 1) for env in instructions(FINAL, "ENV") for kv in shlex.split(env))


def test_dockerfile_binds_beyond_loopback_on_the_exposed_port():
    env = dockerfile_env()
    assert Settings(bind=env["GRADSERVE_BIND"]).loopback is False
    assert instructions(FINAL, "EXPOSE") == [str(bind_port(env))] == ["8000"]


def make_serve() -> list[str]:
    """The command `make serve` runs, with the venv's path taken off gunicorn."""
    recipe = (ROOT / "Makefile").read_text().partition("\nserve:")[2].splitlines()[1]
    argv = shlex.split(recipe.strip().removeprefix("exec "))
    return [Path(argv[0]).name, *argv[1:]]


def test_dockerfile_cmd_is_the_gunicorn_of_make_serve_with_its_config_under_workdir():
    (cmd,) = instructions(FINAL, "CMD")
    argv = json.loads(cmd)
    assert argv == make_serve()
    assert argv[0] == "gunicorn" and "--config" in argv
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config).is_file()
    # The config's directory is copied into WORKDIR, where gunicorn starts.
    assert instructions(FINAL, "WORKDIR")
    copied = [c.split()[0] for c in instructions(FINAL, "COPY") if not c.startswith("--")]
    assert Path(config).parts[0] in copied


def healthcheck_argv() -> list[str]:
    (check,) = instructions(FINAL, "HEALTHCHECK")
    options, _, argv = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(argv)
    assert argv[0] == "python"  # the image has no curl; its Python does the request
    return [sys.executable, *argv[1:]]


def test_dockerfile_healthcheck_passes_on_a_live_server_and_fails_without_one(server):
    argv = healthcheck_argv()
    assert "/healthz" in argv[-1]
    env = {**os.environ, "GRADSERVE_BIND": f"0.0.0.0:{server.port}"}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    with socket.socket() as taken:  # bound, never listening: a connection is refused
        taken.bind(("127.0.0.1", 0))
        env["GRADSERVE_BIND"] = f"0.0.0.0:{taken.getsockname()[1]}"
        assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0


def test_dockerignore_keeps_the_venv_and_git_out_and_the_packages_in():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git"} <= ignored
    assert not ignored & {"autograd", "service", "client", "pyproject.toml", "README.md"}


# ---- docker-compose.yml -----------------------------------------------------------------

def test_compose_settings_are_in_one_place_and_all_real_settings():
    c = compose()
    env = c["x-gradserve-env"]
    assert c["services"]["gradserve"]["environment"] == env
    assert all(name.startswith("GRADSERVE_") for name in env)
    unknown = as_fields(env).keys() - Settings.model_fields.keys()
    assert not unknown  # Settings ignores unknown names: a typo would pass silently


def test_compose_replicas_come_from_the_environment_default_two():
    svc = compose()["services"]["gradserve"]
    replicas = svc["deploy"]["replicas"]
    assert re.fullmatch(r"\$\{GRADSERVE_REPLICAS:-2\}", replicas)
    # --scale needs replicas without fixed names or host ports of their own.
    assert "container_name" not in svc and "ports" not in svc


def test_compose_replicas_use_the_images_healthcheck_and_nginx_waits_for_it():
    c = compose()
    assert "test" not in c["services"]["gradserve"].get("healthcheck", {})  # inherited
    assert c["services"]["gradserve"]["build"] == "."
    assert c["services"]["nginx"]["depends_on"]["gradserve"]["condition"] == "service_healthy"
    assert any("/healthz" in part for part in c["services"]["nginx"]["healthcheck"]["test"])


def test_compose_stop_grace_outlasts_gunicorns_graceful_timeout(tmp_path, monkeypatch):
    conf = gunicorn_config(compose_env(), tmp_path, monkeypatch)
    stop = seconds(compose()["services"]["gradserve"]["stop_grace_period"])
    assert stop > conf["graceful_timeout"]


def test_compose_memory_limit_holds_every_workers_cap(tmp_path, monkeypatch):
    conf = gunicorn_config(compose_env(), tmp_path, monkeypatch)
    limits = compose()["services"]["gradserve"]["deploy"]["resources"]["limits"]
    s = conf["_settings"]
    assert 0 < s.max_total_bytes < s.worker_memory_bytes
    assert size(limits["memory"]) > conf["workers"] * s.worker_memory_bytes
    assert cpus(limits["cpus"]) >= conf["workers"]


def test_compose_mounts_deploy_nginx_conf():
    (volume,) = compose()["services"]["nginx"]["volumes"]
    source, target, *_ = volume.split(":")
    assert (ROOT / source).resolve() == ROOT / "deploy" / "nginx.conf"
    assert target.startswith("/etc/nginx/conf.d/")


# ---- deploy/nginx.conf ------------------------------------------------------------------

def test_nginx_body_limit_equals_the_services():
    (limit,) = nginx("client_max_body_size")
    assert size(limit[0]) == Settings().max_body_bytes
    assert size(limit[0]) == Settings(**as_fields(compose_env())).max_body_bytes


def test_nginx_retries_a_failed_replica_for_post_too():
    (retry,) = nginx("proxy_next_upstream", "location /")
    assert {"error", "timeout", "http_502", "http_503", "non_idempotent"} <= set(retry)
    # A retried POST needs its whole body kept.
    assert nginx("proxy_request_buffering") in ([], [["on"]])


def test_nginx_waits_longer_than_gunicorn_lets_a_worker_run(tmp_path, monkeypatch):
    conf = gunicorn_config(compose_env(), tmp_path, monkeypatch)
    assert conf["timeout"] > conf["_settings"].deadline_s
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = nginx(name, "location /")
        assert seconds(value[0]) > conf["timeout"]
    (connect,) = nginx("proxy_connect_timeout", "location /")
    assert seconds(connect[0]) <= 5  # a dead replica is passed over quickly


def test_nginx_upstream_is_the_compose_service_re_resolved_with_keepalive():
    (server,) = nginx("server", "upstream gradserve")
    host, _, port = server[0].partition(":")
    assert host in compose()["services"] and int(port) == bind_port(compose_env())
    assert "resolve" in server and nginx("zone", "upstream gradserve")
    assert nginx("resolver")[0][0] == "127.0.0.11"  # Docker's DNS
    assert nginx("keepalive", "upstream gradserve")
    (proxy_pass,) = nginx("proxy_pass", "location /")
    assert proxy_pass == ["http://gradserve"]


@pytest.mark.parametrize("env", [compose_env, k8s_env, dict], ids=["compose", "k8s", "serve"])
def test_every_deployment_runs_the_reading_worker_with_keepalive(env, tmp_path, monkeypatch):
    """Slow and idle clients are read by service/worker.py's event loop in `make serve`, in
    compose (behind nginx, which buffers too) and in k8s (gunicorn exposed directly): the
    image's CMD is make serve's (a test above), and the Deployment does not replace it."""
    conf = gunicorn_config(env(), tmp_path, monkeypatch)
    assert conf["worker_class"] == "service.worker.Worker"
    (timeout,) = nginx("keepalive_timeout", "upstream gradserve")
    assert 0 < seconds(timeout[0]) < conf["keepalive"]  # nginx lets go first
    assert "command" not in container() and "args" not in container()


def test_nginx_passes_the_clients_request_id_or_makes_one():
    headers = {args[0].lower(): args[1] for args in nginx("proxy_set_header", "location /")}
    variable = headers["x-request-id"]
    maps = nginx_directives((ROOT / "deploy" / "nginx.conf").read_text())
    (block,) = {blocks[-1] for blocks, _, _ in maps
                if blocks and blocks[-1].startswith("map ")}
    assert block.split()[1:] == ["$http_x_request_id", variable]
    entries = {n: a for blocks, n, a in maps if blocks and blocks[-1] == block}
    assert entries["default"] == ["$http_x_request_id"]
    assert entries['""'] == ["$request_id"]


# ---- deploy/k8s -------------------------------------------------------------------------

def probe_port(probe: dict) -> int:
    port = probe["httpGet"]["port"]
    return {p["name"]: p["containerPort"] for p in container()["ports"]}.get(port, port)


@pytest.mark.parametrize("probe, path", [
    ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")])
def test_k8s_probes_point_at_health_and_readiness_on_the_served_port(probe, path):
    c = container()
    assert c[probe]["httpGet"]["path"] == path
    assert probe_port(c[probe]) == bind_port(k8s_env())


def test_k8s_drains_before_exit_and_waits_for_gunicorn(tmp_path, monkeypatch):
    conf = gunicorn_config(k8s_env(), tmp_path, monkeypatch)
    s = conf["_settings"]
    ready = container()["readinessProbe"]
    # /readyz turns 503 on SIGTERM; the probe must notice well within the drain.
    assert ready["periodSeconds"] * ready.get("failureThreshold", 3) < s.drain_s
    grace = k8s("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > conf["graceful_timeout"] > s.drain_s + s.deadline_s


def test_k8s_resources_fit_the_workers(tmp_path, monkeypatch):
    conf = gunicorn_config(k8s_env(), tmp_path, monkeypatch)
    s = conf["_settings"]
    res = container()["resources"]
    assert 0 < s.max_total_bytes < s.worker_memory_bytes
    assert size(res["limits"]["memory"]) > conf["workers"] * s.worker_memory_bytes
    assert size(res["requests"]["memory"]) <= size(res["limits"]["memory"])
    assert cpus(res["requests"]["cpu"]) == conf["workers"] <= cpus(res["limits"]["cpu"])
    assert not s.loopback


def test_k8s_api_keys_come_from_a_secret():
    (keys,) = [e for e in container()["env"] if e["name"] == "GRADSERVE_API_KEYS"]
    assert "secretKeyRef" in keys["valueFrom"]


def test_k8s_service_selects_the_pods_and_targets_the_served_port():
    pod_labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    spec = k8s("Service")["spec"]
    assert spec["selector"].items() <= pod_labels.items()
    assert k8s("Deployment")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = spec["ports"]
    assert probe_port({"httpGet": {"port": port["targetPort"]}}) == bind_port(k8s_env())
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == bind_port(k8s_env())


def test_k8s_hpa_scales_the_deployment_on_cpu():
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s("Deployment")["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in k8s("Deployment")["spec"]  # the HPA owns the count


def test_k8s_and_compose_run_the_same_image():
    assert container()["image"] == compose()["services"]["gradserve"]["image"]


# ---- models (PROTOCOL.md §10) ---------------------------------------------------------------

def test_every_deployment_serves_the_example_models_from_one_folder():
    """compose mounts ./models where GRADSERVE_MODELS_DIR points; k8s mounts a ConfigMap
    holding exactly the files of models/ there; the image copies them there too."""
    examples = {p.name: json.loads(p.read_text()) for p in (ROOT / "models").glob("*.json")}
    assert len(examples) >= 2
    where = compose_env()["GRADSERVE_MODELS_DIR"]
    assert f"./models:{where}:ro" in compose()["services"]["gradserve"]["volumes"]
    config = {k: json.loads(v) for k, v in k8s("ConfigMap")["data"].items()}
    assert config == examples
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == "models"]
    assert mount["mountPath"] == k8s_env()["GRADSERVE_MODELS_DIR"] == where
    volumes = k8s("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "configMap": {"name": k8s("ConfigMap")["metadata"]["name"]}} \
        in volumes
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY models models" in dockerfile and f"GRADSERVE_MODELS_DIR={where}" in dockerfile


def test_k8s_ingress_routes_everything_to_the_service_with_the_services_limits(
        tmp_path, monkeypatch):
    ingress = k8s("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = k8s("Service")
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    notes = {k.removeprefix("nginx.ingress.kubernetes.io/"): v
             for k, v in ingress["metadata"]["annotations"].items()}
    assert size(notes["proxy-body-size"]) == Settings(**as_fields(k8s_env())).max_body_bytes
    conf = gunicorn_config(k8s_env(), tmp_path, monkeypatch)
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert seconds(notes[name]) > conf["_settings"].deadline_s
    assert "non_idempotent" in notes["proxy-next-upstream"].split()


def make_dry_run(*args: str) -> list[str]:
    # as a user runs it, also when the suite itself runs under `make test`
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_make_image_builds_and_tags_what_the_deployments_name():
    """`make image` needs Docker, which does not run here: what it would run is checked."""
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert make_dry_run("image") == [f"docker build -t gradserve:{version} .",
                                     f"docker tag gradserve:{version} gradserve:latest"]
    assert container()["image"] == f"gradserve:{version}"
    pushed = make_dry_run("image", "push", "IMAGE=registry.example.com/team/gradserve")
    assert f"docker push registry.example.com/team/gradserve:{version}" in pushed
