"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

The models' JSON Schema is reshaped where code generators cannot follow it,
without changing what it accepts on the wire (openapi-python-client,
openapi-generator's python and openapi-typescript each generate a working
client from it; tests/e2e/test_generated_clients.py proves it):

- tensor data is a number, a non-finite string, or a list with untyped items,
  not a recursive type (which none of the three could express);
- a map with a key pattern is `additionalProperties` plus `propertyNames`
  (openapi-python-client drops `patternProperties`, and so sent `"inputs": {}`);
- defaults are said in descriptions (openapi-typescript makes a property with
  a `default` required, so a body that leaves it out did not type-check);
- an `anyOf` inside an `anyOf` is one `anyOf`.
"""

from __future__ import annotations

import copy
import json
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
            "schema": {"type": "object", "additionalProperties": True}
            if r.media == "application/json" else {"type": "string"}}
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
        "components": {"schemas": _for_generators(schemas.get("$defs", {})), "securitySchemes": {
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


# ---- the schema as code generators can use it (the module docstring says why) ------------

DATA = "NestedData"  # schemas.py's recursive type, replaced by DATA_FORMS wherever it is used
DATA_FORMS = [
    {"type": "number"},
    {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
    {"type": "array", "items": {}, "description": "numbers and these strings, or lists of "
     "them nested to any depth (rectangular); flat in C order with `shape`"},
]
NOT_SCHEMAS = {"enum", "const", "default", "required", "examples"}  # values, not schemas


def _for_generators(schemas: dict) -> dict:
    return {name: _reshape(s) for name, s in schemas.items() if name != DATA}


def _reshape(node):
    """One schema, rewritten bottom-up by the rules of the module docstring."""
    if isinstance(node, list):
        return [_reshape(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("$ref") == REF.format(model=DATA):
        return {"anyOf": copy.deepcopy(DATA_FORMS)}
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _reshape(s) for name, s in value.items()}
        elif key in NOT_SCHEMAS:
            out[key] = value
        else:
            out[key] = _reshape(value)
    if "default" in out:
        default = out.pop("default")
        if default is not None:
            said = out.get("description", "").rstrip(".")
            out["description"] = f"{said}; default: {json.dumps(default)}".lstrip("; ")
    if "patternProperties" in out:
        ((pattern, values),) = out.pop("patternProperties").items()
        out["additionalProperties"] = values
        out["propertyNames"] = {"pattern": pattern}
    if "anyOf" in out:
        out["anyOf"] = [alt for a in out["anyOf"]
                        for alt in (a["anyOf"] if set(a) == {"anyOf"} else [a])]
    return out
