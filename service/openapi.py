"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .errors import CODES, PROBLEM, title
from .schemas import Problem

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    """One endpoint: how it is served, and how the document describes it."""

    method: str
    path: str
    view: object
    summary: str
    response: type[BaseModel] | None         # the 200 body; None for non-JSON (metrics)
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    media: str = "application/json"
    extra: dict = field(default_factory=dict)  # more OpenAPI members of the operation
    any_media: bool = False  # the body is JSON whatever its Content-Type says (UM-Bridge)
    openapi: bool = True     # in this document; another protocol's routes are not


def build(routes: list[Route], version: str) -> dict:
    routes = [r for r in routes if r.openapi]
    models = {m for r in routes for m in (r.request, r.response) if m} | {Problem}
    refs, schemas = models_json_schema([(m, "validation") for m in sorted(models, key=str)],
                                       ref_template=REF)
    paths: dict = {}
    for r in routes:
        op = {"summary": r.summary, "operationId": r.view.__name__, "responses": {}}
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": refs[(r.request, "validation")]}}}
        ok = {"schema": refs[(r.response, "validation")]} if r.response else {
            "schema": {"type": "object" if r.media == "application/json" else "string"}}
        op["responses"]["200"] = {"description": "OK", "content": {r.media: ok}}
        statuses = set(r.errors) | {500} | ({401} if r.auth else set())
        for status in sorted(statuses):
            op["responses"][str(status)] = _problem(status, refs[(Problem, "validation")])
        if r.auth:
            op["security"] = [{"bearer": []}, {}]
        op.update(r.extra)
        paths.setdefault(template(r.path), {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "gradserve", "version": version,
                 "description": "An autodiff microservice: post a computation graph as JSON, "
                                "get values and gradients back. See PROTOCOL.md."},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "required only when the server has API keys"}}},
    }


def template(path: str) -> str:
    """A Flask rule as an OpenAPI path: /v1/models/<name> is /v1/models/{name}."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)


def _problem(status: int, schema: dict) -> dict:
    codes = sorted(code for code, (s, _) in CODES.items() if s == status)
    response = {"description": f"{title(status)}; code: {', '.join(codes)}",
                "content": {PROBLEM: {"schema": schema}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                               "description": "seconds to wait"}}
    return response
