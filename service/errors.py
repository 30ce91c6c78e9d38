"""Every failure becomes one application/problem+json body (RFC 9457), in one place.

The body carries a stable `code` that clients switch on and, where the fault
lies in the request, RFC 6901 `pointer`s to it. Nothing from the request's
tensors is echoed back, and no traceback leaves the process.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from flask import Flask, Response, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from autograd import AutogradError, CycleError

log = logging.getLogger("gradserve")

PROBLEM = "application/problem+json"

# The status of every code the engine can raise; any other engine code is a 422.
ENGINE_STATUS = {
    "graph_too_large": 413,
    "tensor_too_large": 413,
    "expression_too_large": 413,
    "deadline_exceeded": 504,
}

# Werkzeug's HTTP errors, by status, to our codes.
HTTP_CODES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

# Every code the service answers with, and when: the table in README.md and OpenAPI.
CODES = {
    "malformed_json": (400, "the body is not strict JSON, or not a JSON object"),
    "unauthorized": (401, "API keys are configured and no valid bearer key was sent"),
    "not_found": (404, "no such endpoint"),
    "unknown_model": (404, "no model of that name; GET /v1/models lists them"),
    "method_not_allowed": (405, "the endpoint does not take this method"),
    "body_too_large": (413, "the body is larger than max_body_bytes"),
    "graph_too_large": (413, "nodes, peak tensor bytes or FLOPs over the limits"),
    "tensor_too_large": (413, "one tensor would have more than max_elements elements"),
    "response_too_large": (413, "the response would pass max_response_bytes; ask for base64"),
    "expression_too_large": (413, "an expr longer than 10,000 characters"),
    "bad_request": (400, "any other malformed HTTP request"),
    "unsupported_media_type": (415, "Content-Type is not application/json"),
    "validation_error": (422, "the body does not match the schema"),
    "bad_expression": (422, "an expr that does not parse or steps outside the expression form"),
    "bad_tensor": (422, "tensor data that is ragged, of the wrong length, or not numbers"),
    "unknown_op": (422, "an op that is not in GET /v1/ops"),
    "unknown_id": (422, "an id that is neither an input nor a node"),
    "duplicate_id": (422, "an id used twice across inputs and nodes"),
    "cycle": (422, "the nodes form a cycle"),
    "wrong_arity": (422, "an op given the wrong number of args"),
    "bad_attribute": (422, "an unknown, missing or ill-typed attribute, or an axis out of range"),
    "shape_mismatch": (422, "shapes that do not broadcast or align, or a seed of the wrong shape"),
    "seed_required": (422, "grad.of is not a single element and no grad.seed was given"),
    "dtype_mismatch": (422, "an unsupported dtype"),
    "overloaded": (429, "every worker is busy and the queue is full; retry after Retry-After"),
    "not_ready": (503, "the server is starting or draining"),
    "deadline_exceeded": (504, "the evaluation ran past deadline_s and was stopped"),
    "request_timeout": (408, "the request did not arrive in full within request_timeout_s"),
    "uri_too_long": (414, "the request line is longer than the server reads"),
    "header_too_large": (431, "too many header fields, or one too large"),
    "internal": (500, "a bug; never the answer to anything a client sends"),
}


class ApiError(Exception):
    """An error the service answers with: status, stable code, detail, and pointers."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict] | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors = errors or []
        self.headers = headers or {}


def pointer(path) -> str:
    """RFC 6901: a path of keys and indexes as a JSON Pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


# Where to look next, by engine code: the engine speaks no HTTP, so the service says it.
ENGINE_HINTS = {"unknown_op": "GET /v1/ops lists every op"}


def from_engine(e: AutogradError) -> ApiError:
    status = ENGINE_STATUS.get(e.code, 422)
    if isinstance(e, CycleError):
        errors = [{"pointer": pointer(e.path), "detail": f"cycle through {', '.join(e.ids)}"}]
    else:
        errors = [{"pointer": pointer(e.path), "detail": e.detail}]
    if e.column is not None:
        errors[0]["column"] = e.column
    hint = ENGINE_HINTS.get(e.code)
    return ApiError(status, e.code, f"{e.detail}; {hint}" if hint else e.detail, errors)


def from_validation(e: ValidationError, limit: int = 20, count: int | None = None) -> ApiError:
    """At most `limit` pointers: 200,000 bad nodes must not make a 34 MB answer. `count`: how
    many errors there are in all, when `e` holds only the first ones."""
    errors = []
    for err in e.errors(include_url=False, include_input=False, include_context=False)[:limit]:
        loc = [p for p in err["loc"] if p != "[key]"]
        errors.append({"pointer": pointer(loc), "detail": err["msg"]})
    first = errors[0] if errors else {"pointer": "", "detail": "invalid"}
    where = f" at {first['pointer']}" if first["pointer"] else ""
    count = count or e.error_count()
    more = f" (and {count - 1:,} more)" if count > 1 else ""
    return ApiError(422, "validation_error", f"{first['detail']}{where}{more}", errors)


# RFC 9110's names where Python's HTTPStatus still has the older ones.
TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def title(status: int) -> str:
    return TITLES.get(status) or HTTPStatus(status).phrase


def problem(err: ApiError) -> Response:
    body = {"type": "about:blank", "title": title(err.status), "status": err.status,
            "code": err.code, "detail": err.detail}
    if err.errors:
        body["errors"] = err.errors
    return Response(orjson.dumps(body), status=err.status, mimetype=PROBLEM, headers=err.headers)


FORMATS = "gradserve.error_formats"
CODE = "gradserve.code"  # environ key: the code of the error answered, for the log line


def init_app(app: Flask) -> None:
    """One handler for everything: ours, the engine's, pydantic's, werkzeug's, and bugs;
    written as problem+json, or in the format of the protocol whose prefix the path has."""
    app.extensions[FORMATS] = {}

    @app.errorhandler(Exception)
    def handle(e: Exception):
        err = to_api_error(e)
        request.environ[CODE] = err.code
        for prefix, render in app.extensions[FORMATS].items():
            if request.path.startswith(prefix):
                return render(err)
        return problem(err)


def use_format(app: Flask, prefix: str, render) -> None:
    """Errors on paths under `prefix` are written by `render(ApiError) -> Response`."""
    app.extensions[FORMATS][prefix] = render


def to_api_error(e: Exception) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, AutogradError):
        return from_engine(e)
    if isinstance(e, ValidationError):
        return from_validation(e)
    if isinstance(e, HTTPException) and e.code in HTTP_CODES:
        allowed = getattr(e, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        detail = CODES[HTTP_CODES[e.code]][1]
        return ApiError(e.code, HTTP_CODES[e.code], detail, headers=headers)
    if isinstance(e, MemoryError):
        log.warning("evaluation ran out of memory (worker cap reached)")
        return ApiError(413, "graph_too_large", "the evaluation ran out of memory on this "
                        "server; make the graph smaller")
    if isinstance(e, HTTPException) and e.code and e.code < 500:
        return ApiError(e.code, "bad_request", HTTPStatus(e.code).phrase)
    log.exception("unhandled error")
    return ApiError(500, "internal", "an internal error occurred; it has been logged")
