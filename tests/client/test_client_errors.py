"""The SDK's copy of the engine-code -> status table and of the problem body it builds for an
engine error (client/errors.py; the client never imports the service) equal the service's,
error class by error class: a local error and a remote one are the same error."""

import pytest

import autograd
from client import errors as client_errors
from service import errors as service_errors


def engine_error_classes() -> list[type]:
    found, todo = [], [autograd.AutogradError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def instance(cls: type):
    if issubclass(cls, autograd.CycleError):
        return cls("the nodes form a cycle", ids=["a", "b"], path=("nodes", 1, "args", 0))
    return cls("what went wrong", path=("nodes", 2, "op"))


def test_the_status_tables_are_equal():
    assert client_errors.ENGINE_STATUS == service_errors.ENGINE_STATUS
    assert client_errors.ENGINE_HINTS == service_errors.ENGINE_HINTS
    for code, status in client_errors.ENGINE_STATUS.items():
        assert service_errors.CODES[code][0] == status


@pytest.mark.parametrize("cls", engine_error_classes(), ids=lambda c: c.__name__)
def test_an_engine_error_is_the_same_problem_locally_and_remotely(cls):
    e = instance(cls)
    remote = service_errors.to_api_error(e)
    local = client_errors.from_engine(e)
    assert local.status == remote.status
    assert type(local) is client_errors.error_class(remote.status)
    body = service_errors.problem(remote).get_json()
    assert local.problem == body
