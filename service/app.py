"""The Flask application factory and the route table (PROTOCOL.md §1, §5)."""

from __future__ import annotations

import binascii
import hmac
import importlib.metadata
import logging
import time
from dataclasses import dataclass, field

import pybase64
from flask import Flask, Response, current_app, request

from autograd import DTYPES, OPS

from . import (
    codec,
    errors,
    models,
    observability,
    openapi,
    pages,
    shedding,
    tesseract,
    umbridge,
)
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
    models: dict = field(init=False)  # name -> models.Model, loaded and planned at start

    def __post_init__(self):
        self.plans = PlanCache(self.settings.plan_cache, self.settings.plan_cache_bytes)
        self.models = models.load(self.settings.models_dir, self.settings, self.plans)


def runtime() -> Runtime:
    return current_app.extensions["gradserve"]


def json_response(obj, status: int = 200) -> Response:
    return Response(codec.dumps(obj), status=status, mimetype="application/json")


# ---- views ------------------------------------------------------------------------------

def evaluate():
    rt = runtime()
    deadline = time.monotonic() + rt.settings.deadline_s  # reading and validating count too
    req = evaluation.validate(_graph_body(rt), rt.settings)
    body = evaluation.evaluate(req, rt.settings, rt.plans, deadline)
    request.environ[observability.NODES] = body["stats"]["nodes"]  # for the log line, metrics
    return json_response(body)


def shapes():
    rt = runtime()
    req = evaluation.validate(_graph_body(rt), rt.settings, ShapesRequest, {"shapes": True})
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
    """The request body, in one read (the guard has checked a declared length): werkzeug's
    chunked read takes ~60 ms for a 22 MB base64 body, one read a few. A chunked body is read
    to one byte past the limit, so that a longer one is refused, never cut and evaluated."""
    length = request.content_length
    limit = runtime().settings.max_body_bytes
    try:
        body = request.environ["wsgi.input"].read(limit + 1 if length is None else length)
    except MemoryError:
        raise
    except Exception as e:  # the server's chunk parser (gunicorn's raises its own types)
        raise ApiError(400, "bad_request", f"the body could not be read: {e}") from None
    if length is None:
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the chunked body passes {limit:,} bytes, "
                           "the limit", headers={"Connection": "close"})
        return body
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
    # Pages for people (PROTOCOL.md §13); open like the document they show.
    Route("GET", "/", pages.playground, "The playground: evaluate a graph in a browser", None,
          media="text/html", auth=False),
    Route("GET", "/docs", pages.docs, "Interactive documentation of this document", None,
          media="text/html", auth=False),
    # the files the pages load, as open as the pages
    Route("GET", "/assets/<path:name>", pages.asset, "A file of the playground", None,
          media="text/plain", auth=False, openapi=False),
    Route("GET", "/docs/<path:name>", pages.swagger_ui, "A file of the interactive docs", None,
          media="text/plain", auth=False, openapi=False),
    *models.ROUTES,
    *umbridge.ROUTES,
    *tesseract.ROUTES,
]
_BY_ENDPOINT = {r.view.__name__: r for r in ROUTES}
# What the guard assumes of a view missing from ROUTES: keyed, and a JSON body if one is sent.
_UNLISTED = {True: Route("POST", "", None, "", None, request=EvaluateRequest),
             False: Route("GET", "", None, "", None)}


def _sends_body() -> bool:
    return (request.method not in ("GET", "HEAD") or bool(request.content_length)
            or "chunked" in request.headers.get("Transfer-Encoding", "").lower())


# ---- the guard every request passes ------------------------------------------------------

def _guard():
    """Auth, then body size from Content-Length, then media type: all before reading. A view
    that is not in ROUTES gets every check (fails closed)."""
    if request.routing_exception is not None:
        return None  # werkzeug answers 404/405, through the one error handler
    route = _BY_ENDPOINT.get(request.endpoint) or _UNLISTED[_sends_body()]
    request.environ[observability.ROUTE] = route.path
    rt = runtime()
    settings = rt.settings
    if route.auth and settings.api_keys and not _authorized(settings.api_keys):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <key> (or the key as "
                       "the password of HTTP Basic auth)",
                       headers={"WWW-Authenticate": 'Bearer realm="gradserve"'})
    if route.request is not None or route.any_media:
        shedding.check(rt.listeners, settings.max_queue)
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise ApiError(413, "body_too_large", f"the body has {length:,} bytes; the limit "
                           f"is {settings.max_body_bytes:,}")
        if route.any_media:
            return None
        if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
            sent = request.mimetype or "none"
            raise ApiError(415, "unsupported_media_type",
                           f"send Content-Type: application/json, not {sent!r}")
    return None


def _authorized(keys: tuple[str, ...]) -> bool:
    """A bearer key, or a key as the password of HTTP Basic auth: clients that take only a
    URL (UM-Bridge's, Tesseract's) send one as http://:KEY@host/."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    scheme, token = scheme.lower(), token.strip().encode()
    if scheme == "basic":
        try:
            token = pybase64.b64decode(token, validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return False
    ok = False
    for key in keys:  # every key compared, in constant time each
        ok |= hmac.compare_digest(token, key.encode())
    return ok and scheme in ("bearer", "basic")


# ---- the factory ------------------------------------------------------------------------

def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask("gradserve", static_folder=None)
    # No redirects: werkzeug's would merge slashes into a Location built from the Host header.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["gradserve"] = Runtime(settings)
    errors.init_app(app)
    errors.use_format(app, umbridge.PREFIX, umbridge.error_response)
    errors.use_format(app, tesseract.PREFIX, tesseract.error_response)
    observability.init_app(app, settings.log_level, [r.path for r in ROUTES])
    for r in ROUTES:
        # no automatic OPTIONS: it would pass the guard as the route's method and get a 415
        app.add_url_rule(r.path, endpoint=r.view.__name__, view_func=r.view, methods=[r.method],
                         provide_automatic_options=False)
    app.before_request(_guard)
    return app
