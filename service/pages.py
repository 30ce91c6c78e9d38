"""The pages for people (PROTOCOL.md §13): the playground at `/`, the API docs at `/docs`.

Everything a page loads comes from this server: our own files under `/assets/`
(service/static, with a graph layout library vendored there), Swagger UI's under
`/docs/` from the flask-swagger-ui package. The pages and their files need no
API key (the playground asks for one and sends it with each request), and a
Content-Security-Policy keeps them from loading anything from, or sending
anything to, another origin.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Response, send_from_directory

STATIC = Path(__file__).with_name("static")
SWAGGER_UI = Path(flask_swagger_ui.__file__).with_name("dist")

# Swagger UI sets inline style attributes and draws icons as data: URIs; nothing else is
# allowed but this origin.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def playground() -> Response:
    return _send(STATIC, "playground.html")


def docs() -> Response:
    return _send(STATIC, "docs.html")


def asset(name: str) -> Response:
    return _send(STATIC, name)


def swagger_ui(name: str) -> Response:
    return _send(SWAGGER_UI, name)


def _send(folder: Path, name: str) -> Response:
    response = send_from_directory(folder, name)  # refuses paths that leave the folder (404)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
