"""The Flask application factory and the route table (PROTOCOL.md §1, §5)."""

from __future__ import annotations

import hmac
import importlib.metadata
import logging
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, request

from autograd import DTYPES, OPS

from . import codec, errors, observability, openapi, shedding
from . import evaluate as evaluation
from .config import Settings
from .errors import ApiError
from .metrics import metrics
from .openapi import Route
from .plans import PlanCache
from .schemas import (
    EvaluateRequest,
    EvaluateResponse,
    Info,
    OpsList,
    ShapesRequest,
    ShapesResponse,
    Status,
)

log = logging.getLogger("gradserve")

try:
    VERSION = importlib.metadata.version("gradserve")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"


@dataclass
class Runtime:
    """Per-process state: the settings, the plan cache, whether the worker is draining."""

    settings: Settings
    draining: bool = False
    listeners: tuple = ()  # the listening sockets, set in each gunicorn worker (shedding)
    plans: PlanCache = field(init=False)

    def __post_init__(self):
        self.plans = PlanCache(self.settings.plan_cache, self.settings.max_nodes)


def runtime() -> Runtime:
    return current_app.extensions["gradserve"]


def json_response(obj, status: int = 200) -> Response:
    return Response(codec.dumps(obj), status=status, mimetype="application/json")


# ---- views ------------------------------------------------------------------------------

def evaluate():
    rt = runtime()
    req = EvaluateRequest.model_validate(_graph_body(rt))
    body = evaluation.evaluate(req, rt.settings, rt.plans)
    request.environ[observability.NODES] = body["stats"]["nodes"]  # for the log line, metrics
    return json_response(body)


def shapes():
    rt = runtime()
    req = ShapesRequest.model_validate(_graph_body(rt), context={"shapes": True})
    return json_response(evaluation.shapes(req, rt.settings))


def _graph_body(rt: Runtime) -> dict:
    """The body of a graph request as a JSON object, too many nodes refused before a model
    is made of each."""
    doc = codec.loads(_body())
    if not isinstance(doc, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    if isinstance(doc.get("nodes"), list):
        evaluation.limits(rt.settings).check_nodes(len(doc["nodes"]))
    return doc


def _body() -> bytes:
    """The request body, in one read when its length is known (the guard has checked it):
    werkzeug's chunked read takes ~60 ms for a 22 MB base64 body, one read a few."""
    length = request.content_length
    if length is None:  # chunked: werkzeug reads it, enforcing MAX_CONTENT_LENGTH
        return request.get_data(cache=False)
    body = request.environ["wsgi.input"].read(length)
    if len(body) < length:
        raise ApiError(400, "malformed_json", f"the body ended after {len(body):,} of "
                       f"{length:,} bytes")
    return body


def info():
    return json_response({"name": "gradserve", "version": VERSION, "dtypes": list(DTYPES),
                          "encodings": ["nested", "flat", "base64"],
                          "limits": runtime().settings.public_limits()})


def ops():
    return json_response({"ops": [op.describe() for op in OPS.values()]})


def openapi_document():
    return json_response(openapi.build(ROUTES, VERSION))


def healthz():
    return json_response({"status": "ok"})


def readyz():
    if runtime().draining:
        raise ApiError(503, "not_ready", "this worker is draining; send work elsewhere",
                       headers={"Retry-After": "1"})
    return json_response({"status": "ready"})


ROUTES = [
    Route("POST", "/v1/evaluate", evaluate, "Evaluate a graph: values, and gradients if asked",
          EvaluateResponse, request=EvaluateRequest,
          errors=(400, 413, 415, 422, 429, 504)),
    Route("POST", "/v1/shapes", shapes, "Shapes, dtypes and cost of what /v1/evaluate would "
          "return; tensors may be given by shape alone, nothing is computed", ShapesResponse,
          request=ShapesRequest, errors=(400, 413, 415, 422, 429)),
    Route("GET", "/v1", info, "What this server accepts: dtypes, encodings, limits", Info,
          errors=(429,)),
    Route("GET", "/v1/ops", ops, "The op registry", OpsList, errors=(429,)),
    Route("GET", "/openapi.json", openapi_document, "This document", None, auth=False),
    Route("GET", "/healthz", healthz, "Liveness: 200 while the process serves", Status,
          auth=False),
    Route("GET", "/readyz", readyz, "Readiness: 503 while starting or draining", Status,
          errors=(503,), auth=False),
    # Behind the API keys when there are some: the figures tell who uses the service how
    # much. Prometheus sends the key as a bearer token (authorization.credentials_file).
    Route("GET", "/metrics", metrics, "Prometheus metrics, summed over every worker", None,
          media="text/plain", errors=(429,)),
]
_BY_ENDPOINT = {r.view.__name__: r for r in ROUTES}


# ---- the guard every request passes ------------------------------------------------------

def _guard():
    """Auth, then body size from Content-Length, then media type: all before reading."""
    route = _BY_ENDPOINT.get(request.endpoint)
    if route is None:
        return None  # werkzeug answers 404/405, through the one error handler
    rt = runtime()
    settings = rt.settings
    if route.auth and settings.api_keys and not _authorized(settings.api_keys):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": 'Bearer realm="gradserve"'})
    if route.request is not None:
        shedding.check(rt.listeners, settings.max_queue)
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise ApiError(413, "body_too_large", f"the body has {length:,} bytes; the limit "
                           f"is {settings.max_body_bytes:,}")
        if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
            sent = request.mimetype or "none"
            raise ApiError(415, "unsupported_media_type",
                           f"send Content-Type: application/json, not {sent!r}")
    return None


def _authorized(keys: tuple[str, ...]) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip().encode()
    ok = False
    for key in keys:  # every key compared, in constant time each
        ok |= hmac.compare_digest(token, key.encode())
    return ok and scheme.lower() == "bearer"


# ---- the factory ------------------------------------------------------------------------

def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask("gradserve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["gradserve"] = Runtime(settings)
    errors.init_app(app)
    observability.init_app(app, settings.log_level, [r.path for r in ROUTES])
    for r in ROUTES:
        # no automatic OPTIONS: it would pass the guard as the route's method and get a 415
        app.add_url_rule(r.path, endpoint=r.view.__name__, view_func=r.view, methods=[r.method],
                         provide_automatic_options=False)
    app.before_request(_guard)
    return app
