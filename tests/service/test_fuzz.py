"""Property-based fuzzing of the OpenAPI document (schemathesis), in process against the app.

Bodies that fit the document and bodies that break it are sent to every operation; every
response must be a non-5xx that conforms to the document (status, content type, headers,
schema), with every schemathesis check on. At least MIN_CASES cases run per test run.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.errors import UnsupportedSchema

from service.app import ROUTES, create_app
from service.config import Settings
from service.openapi import template
from tests.service.test_models import ROOT

MIN_CASES = 1000
EVALUATE = "POST /v1/evaluate"
# Cases per mode for evaluate; the GET endpoints take no parameters, so a handful covers them
# (hypothesis stops early once it runs out of distinct cases).
PER_MODE = 520
OTHERS = 25

# A graph can fit the document and still be refused for what it means (an unknown id, shapes
# that do not align, too big): 413 and 422 are answers to schema-valid bodies too. A body that
# breaks the document and is too big may be refused for its size first.
CONFIG = SchemathesisConfig.from_dict({"checks": {
    "positive_data_acceptance": {
        "expected-statuses": ["2xx", "401", "404", "413", "422", "429", "5xx"]},
    "negative_data_rejection": {
        "expected-statuses": ["400", "401", "404", "405", "413", "415", "422", "429", "5xx"]},
}})
SCHEMA = schemathesis.openapi.from_wsgi(
    "/openapi.json", create_app(Settings(models_dir=str(ROOT / "models"))), config=CONFIG)
# get_all_operations() leaves out the document it was loaded from; fuzz that one too.
# Other protocols' routes (UM-Bridge) are not in this document: tests/service/test_umbridge.py.
OPERATIONS = {f"{r.method} {template(r.path)}": SCHEMA[template(r.path)][r.method]
              for r in ROUTES if r.openapi}

# The engine's own validation_error (a literal where the op takes none, no tensor argument)
# points into args; any other is pydantic refusing what the document allows.
ENGINE_POINTER = re.compile(r"/nodes/\d+/args(/\d+)?")


def _at(doc, pointer: str):
    for key in pointer.split("/")[1:]:
        key = key.replace("~1", "/").replace("~0", "~")
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def _integral_float(v) -> bool:
    """2.0, or an integer past 64 bits (which JSON parsers read as a float): JSON Schema's
    "integer" takes both, gradserve wants integers written as such."""
    return (isinstance(v, float) and v.is_integer()) or (isinstance(v, int) and abs(v) >= 2**64)


def agrees_with_document(case, response) -> None:
    """A body that fits the document is never refused as a schema violation."""
    if response.status_code != 422 or response.json()["code"] != "validation_error":
        return
    problem = response.json()
    for e in problem["errors"]:
        if not ENGINE_POINTER.fullmatch(e["pointer"]):
            assert _integral_float(_at(case.body, e["pointer"])), (problem, case.body)


def fuzz(operation, mode: GenerationMode, max_examples: int) -> int:
    """Run the operation's cases in one mode through every check; return how many ran.

    Seeded, so every run sends the same cases. Schemathesis cannot negate every schema on
    every draw ("a `not` whose complement is not spelled out": a limit of its negative
    mode, not of the document); a run it gives up on is run again from the next seed
    until the budget is spent, and the caller checks how many cases ran."""
    ran = 0

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        nonlocal ran
        ran += 1
        response = case.call_and_validate()
        if mode is GenerationMode.POSITIVE:
            agrees_with_document(case, response)

    for attempt in range(8):
        try:
            seed(attempt)(run)()
            break
        except UnsupportedSchema:
            if ran >= max_examples:
                break
    return ran


def test_evaluate_survives_fuzzing():
    """The endpoint that takes a body carries the budget: MIN_CASES over both modes."""
    ran = {mode: fuzz(OPERATIONS[EVALUATE], mode, PER_MODE) for mode in GenerationMode}
    assert sum(ran.values()) >= MIN_CASES, ran


@pytest.mark.parametrize("label", sorted(set(OPERATIONS) - {EVALUATE}))
def test_other_operations_survive_fuzzing(label):
    # no parameters and no body: nothing to break, so no negative cases
    assert fuzz(OPERATIONS[label], GenerationMode.POSITIVE, OTHERS) >= 1
