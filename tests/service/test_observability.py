"""Request ids, the JSON log line of each request, and the in-process metrics (one process, so
the ordinary prometheus registry; tests/e2e/test_metrics.py covers gunicorn's workers)."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config import Settings

HEX32 = set("0123456789abcdef")


@pytest.fixture
def client():
    return create_app(Settings()).test_client()


def log_lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def is_generated(rid: str) -> bool:
    return len(rid) == 32 and set(rid) <= HEX32


@pytest.mark.parametrize("sent, kept", [
    ("abc-123", True),
    ("5f0c8e2a-3c1d-4b7e-9a51-0d6f2b9c8e11", True),     # a UUID
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", True),          # nginx's $request_id
    ("trace:span/01+AB=@x.y_z", True),                  # tracing ids with separators
    ("a" * 128, True),
    ("a" * 129, False),                                   # too long
    ("", False),
    ("has space", False),
    ('quote"d', False),
    ("<script>", False),
    ("semi;colon", False),
    ("caf\u00e9", False),                                 # non-ASCII
])
def test_request_id_is_echoed_when_sane_else_generated(client, sent, kept):
    environ = {"HTTP_X_REQUEST_ID": sent}  # raw, as a client could put it on the wire
    r = client.get("/healthz", environ_overrides=environ)
    rid = r.headers["X-Request-ID"]
    if kept:
        assert rid == sent
    else:
        assert rid != sent and is_generated(rid)


def test_generated_ids_differ(client):
    a, b = (client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert is_generated(a) and is_generated(b) and a != b


def test_one_json_line_per_request_with_its_figures(client, example, capsys):
    body = orjson.dumps(example)
    capsys.readouterr()
    ok = client.post("/v1/evaluate", data=body, content_type="application/json",
                     headers={"X-Request-ID": "req-1"})
    bad = client.post("/v1/evaluate", data=b"{", content_type="application/json")
    info = client.get("/v1")
    lines = log_lines(capsys.readouterr().err)
    assert [line["request_id"] for line in lines] == [
        "req-1", bad.headers["X-Request-ID"], info.headers["X-Request-ID"]]
    first, second, third = lines
    assert first | {"time": None, "duration_ms": None} == {
        "time": None, "level": "info", "logger": "gradserve.request", "message": "request",
        "request_id": "req-1", "method": "POST", "path": "/v1/evaluate", "status": 200,
        "duration_ms": None, "bytes_in": len(body), "bytes_out": len(ok.data),
        "pid": os.getpid(), "nodes": len(example["nodes"])}
    assert first["time"].endswith("Z") and first["duration_ms"] >= 0
    assert (second["status"], second["bytes_in"], second["bytes_out"]) == (400, 1, len(bad.data))
    assert "nodes" not in second  # nothing was evaluated
    assert (third["method"], third["path"], third["status"]) == ("GET", "/v1", 200)
    assert "nodes" not in third


def test_a_refused_body_is_not_counted_as_received(client, capsys):
    capsys.readouterr()
    r = client.post("/v1/evaluate", data=b"x" * 5000, content_type="text/plain")
    assert r.status_code == 415
    (line,) = log_lines(capsys.readouterr().err)
    assert line["bytes_in"] == 0  # refused from its headers, never read


def test_an_unhandled_error_is_logged_once_with_its_traceback_and_never_answered_with_it(capsys):
    app = create_app(Settings())

    def explode():
        return {"x": 1 / 0}

    app.add_url_rule("/explode", view_func=explode)
    capsys.readouterr()
    r = app.test_client().get("/explode")
    err = capsys.readouterr().err
    assert r.status_code == 500 and r.json["code"] == "internal"
    assert b"ZeroDivisionError" not in r.data and b"Traceback" not in r.data
    rid = r.headers["X-Request-ID"]
    error, answered = log_lines(err)
    assert error["level"] == "error" and error["request_id"] == rid
    assert "ZeroDivisionError" in error["traceback"]
    assert (answered["request_id"], answered["status"]) == (rid, 500)
    assert err.count("ZeroDivisionError") == 1  # no second copy from another handler
    assert all(line.startswith("{") for line in err.splitlines())  # nothing but JSON


@pytest.mark.parametrize("level, logged", [("debug", True), ("info", True), ("warning", False)])
def test_log_level_comes_from_the_settings(capsys, level, logged):
    client = create_app(Settings(log_level=level)).test_client()
    capsys.readouterr()
    client.get("/healthz")
    assert bool(log_lines(capsys.readouterr().err)) is logged


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_requests_nodes_and_bytes(client, example):
    body = orjson.dumps(example)
    ev = {"endpoint": "/v1/evaluate"}
    names = [("gradserve_requests_total", {**ev, "status": "200"}),
             ("gradserve_requests_total", {**ev, "status": "422"}),
             ("gradserve_nodes_evaluated_total", {}),
             ("gradserve_request_bytes_total", ev),
             ("gradserve_request_duration_seconds_count", ev)]
    before = [value(n, **labels) for n, labels in names]
    for _ in range(3):
        client.post("/v1/evaluate", data=body, content_type="application/json")
    bad = orjson.dumps({**example, "nodes": [{"id": "h", "op": "nope", "args": ["x"]}]})
    assert client.post("/v1/evaluate", data=bad, content_type="application/json"
                       ).status_code == 422
    after = [value(n, **labels) for n, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        3, 1, 3 * len(example["nodes"]), 3 * len(body) + len(bad), 4]
    assert value("gradserve_requests_in_flight") == 0


def test_unknown_paths_share_one_label(client):
    before = value("gradserve_requests_total", endpoint="other", status="404")
    client.get("/no/such/path-1234")
    assert value("gradserve_requests_total", endpoint="other", status="404") == before + 1
    assert "path-1234" not in client.get("/metrics").text


def test_metrics_endpoint_is_prometheus_text_and_counts_itself(client):
    client.get("/metrics")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"gradserve_requests", "gradserve_request_duration_seconds",
            "gradserve_nodes_evaluated", "gradserve_request_bytes", "gradserve_response_bytes",
            "gradserve_requests_in_flight"} <= families.keys()
    counted = [s for s in families["gradserve_requests"].samples
               if s.labels == {"endpoint": "/metrics", "status": "200"}
               and s.name == "gradserve_requests_total"]
    assert counted and counted[0].value >= 1
    in_flight = families["gradserve_requests_in_flight"].samples[0].value
    assert in_flight == 1  # this very scrape


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Bearer k"}, 200),
])
def test_metrics_need_the_api_key_when_there_are_keys(headers, status):
    client = create_app(Settings(api_keys=("k",))).test_client()
    assert client.get("/metrics", headers=headers).status_code == status


def test_metrics_are_in_the_openapi_document_as_text(client):
    op = client.get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert op["operationId"] == "metrics"
    assert "text/plain" in op["responses"]["200"]["content"]
    assert "401" in op["responses"]
