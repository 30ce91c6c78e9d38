"""One exception hierarchy: every failure the SDK raises is a GradserveError.

The root carries the HTTP `status` (None when no answer came), the stable
`code` from the problem body (PROTOCOL.md §4; switch on it, never on the
message) and the whole `problem`. The subclass says what kind of failure it
is, chosen by status:

    GradserveError
    ├── NetworkError          no HTTP answer (status None)
    │   ├── ConnectError      could not connect, or the connection dropped (after retries)
    │   └── ReadTimeoutError  no answer within the client's timeout
    ├── BadRequestError       400, 404, 405, 415: not a request this server takes
    ├── UnauthorizedError     401, 403
    ├── TooLargeError         413
    ├── ValidationError       422: the graph or its tensors are wrong
    ├── OverloadedError       429, 503 (after retries honouring Retry-After)
    ├── DeadlineError         504: the evaluation ran past the server's deadline
    └── ServerError           500 and any other 5xx
"""

from __future__ import annotations

from http import HTTPStatus


class GradserveError(Exception):
    """Root of every SDK error: `status`, `code`, `problem` (the RFC 9457 body) and `detail`."""

    def __init__(self, problem: dict, *, status: int | None = None, response=None):
        self.problem = problem
        self.status = status if status is not None else problem.get("status")
        self.code = problem.get("code")
        self.detail = problem.get("detail") or problem.get("title") or self.code
        self.response = response  # the requests.Response, when there was one
        super().__init__(f"{self.status or '-'} {self.code}: {self.detail}")

    @property
    def errors(self) -> list[dict]:
        """The problem's `errors`: RFC 6901 pointers into the request body, each with a detail."""
        return self.problem.get("errors", [])


class NetworkError(GradserveError):
    """No HTTP answer came back."""


class ConnectError(NetworkError):
    """The server could not be reached (refused, reset, DNS); retried before raising."""


class ReadTimeoutError(NetworkError):
    """The server took longer than the timeout to answer; not retried."""


class BadRequestError(GradserveError):
    """400, 404, 405 or 415: the request itself is malformed or misdirected."""


class UnauthorizedError(GradserveError):
    """401 or 403: no valid API key (Client(api_key=...))."""


class TooLargeError(GradserveError):
    """413: the body, a tensor, the graph or the response passes a server limit."""


class ValidationError(GradserveError):
    """422: the graph is not valid (unknown op or id, shapes, attributes, ...)."""


class OverloadedError(GradserveError):
    @property
    def retry_after(self) -> str | None:
        """The server's Retry-After header, when it sent one."""
        return None if self.response is None else self.response.headers.get("Retry-After")


class DeadlineError(GradserveError):
    """504: the evaluation ran past the server's deadline and was stopped."""


class ServerError(GradserveError):
    """Any other 5xx: a server fault, never the client's."""


BY_STATUS: dict[int, type[GradserveError]] = {
    400: BadRequestError, 404: BadRequestError, 405: BadRequestError, 415: BadRequestError,
    401: UnauthorizedError, 403: UnauthorizedError,
    413: TooLargeError,
    422: ValidationError,
    429: OverloadedError, 503: OverloadedError,
    504: DeadlineError,
}

# What the server answers for each code the engine raises (service/errors.py, ENGINE_STATUS);
# every other engine code is a 422. The local backend raises with these.
ENGINE_STATUS = {"graph_too_large": 413, "tensor_too_large": 413, "expression_too_large": 413,
                 "deadline_exceeded": 504}
# What the server adds to an engine error's detail (the engine says nothing of HTTP).
ENGINE_HINTS = {"unknown_op": "GET /v1/ops lists every op"}


def error_class(status: int) -> type[GradserveError]:
    if status in BY_STATUS:
        return BY_STATUS[status]
    return ServerError if status >= 500 else BadRequestError


def problem(status: int, code: str, detail: str, errors: list[dict] | None = None) -> dict:
    """An RFC 9457 body as the server writes it."""
    body = {"type": "about:blank", "title": _title(status), "status": status, "code": code,
            "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def raise_problem(status: int, body: dict, response=None):
    raise error_class(status)(body, status=status, response=response)


def pointer(path) -> str:
    """RFC 6901: a path of keys and indexes into the request body as a JSON Pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def from_engine(e) -> GradserveError:
    """An `autograd.AutogradError` as the error the server would have answered with, body and
    all (tests/client/test_client_errors.py holds the two equal, error class by class)."""
    status = ENGINE_STATUS.get(e.code, 422)
    ids = getattr(e, "ids", None)  # a CycleError names the ids around the cycle
    entry = {"pointer": pointer(e.path),
             "detail": f"cycle through {', '.join(ids)}" if ids else e.detail}
    if getattr(e, "column", None) is not None:  # in an expression
        entry["column"] = e.column
    hint = ENGINE_HINTS.get(e.code)
    detail = f"{e.detail}; {hint}" if hint else e.detail
    return error_class(status)(problem(status, e.code, detail, [entry]))


# RFC 9110's names where Python's HTTPStatus still has the older ones, as the server writes them.
TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def _title(status: int) -> str:
    try:
        return TITLES.get(status) or HTTPStatus(status).phrase
    except ValueError:
        return "Error"
