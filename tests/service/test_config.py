"""Settings from GRADSERVE_* variables, and defaults a real deployment can keep.

The size checks go through the engine's planner with the service's limits
and shapes only: nothing big is ever allocated.
"""

from __future__ import annotations

import math
import os

import pytest
from pydantic import ValidationError

from autograd import Leaf, LimitExceeded, Plan
from service.config import Settings
from service.evaluate import limits


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test sees only the GRADSERVE_* variables it sets."""
    for name in os.environ:
        if name.startswith("GRADSERVE_"):
            monkeypatch.delenv(name)


ENV = [
    # variable, value, attribute, parsed
    ("GRADSERVE_BIND", "0.0.0.0:9000", "bind", "0.0.0.0:9000"),
    ("GRADSERVE_WORKERS", "3", "workers", 3),
    ("GRADSERVE_API_KEYS", "k1,k2", "api_keys", ("k1", "k2")),
    ("GRADSERVE_API_KEYS", " k1 , ,k2,", "api_keys", ("k1", "k2")),
    ("GRADSERVE_API_KEYS", "only", "api_keys", ("only",)),
    ("GRADSERVE_API_KEYS", "", "api_keys", ()),
    ("GRADSERVE_MAX_BODY_BYTES", "1048576", "max_body_bytes", 2**20),
    ("GRADSERVE_MAX_NODES", "500", "max_nodes", 500),
    ("GRADSERVE_MAX_ELEMENTS", "1000", "max_elements", 1000),
    ("GRADSERVE_MAX_TOTAL_BYTES", "2097152", "max_total_bytes", 2**21),
    ("GRADSERVE_MAX_FLOPS", "1e9", "max_flops", 1e9),
    ("GRADSERVE_MAX_RESPONSE_BYTES", "4096", "max_response_bytes", 4096),
    ("GRADSERVE_DEADLINE_S", "2.5", "deadline_s", 2.5),
    ("GRADSERVE_WORKER_MEMORY_BYTES", "0", "worker_memory_bytes", 0),
    ("GRADSERVE_MAX_QUEUE", "4", "max_queue", 4),
    ("GRADSERVE_DRAIN_S", "1.5", "drain_s", 1.5),
    ("GRADSERVE_LOG_LEVEL", "warning", "log_level", "warning"),
    ("gradserve_max_nodes", "77", "max_nodes", 77),  # names are case-insensitive
]


@pytest.mark.parametrize(("var", "value", "attr", "parsed"), ENV,
                         ids=[f"{r[0]}={r[1]!r}" for r in ENV])
def test_setting_from_the_environment(monkeypatch, var, value, attr, parsed):
    monkeypatch.setenv(var, value)
    assert getattr(Settings(), attr) == parsed


@pytest.mark.parametrize(("var", "value"), [
    ("GRADSERVE_WORKERS", "0"), ("GRADSERVE_WORKERS", "two"), ("GRADSERVE_MAX_NODES", "1.5"),
    ("GRADSERVE_MAX_FLOPS", "0"), ("GRADSERVE_DEADLINE_S", "-1"),
    ("GRADSERVE_MAX_BODY_BYTES", "10"), ("GRADSERVE_MAX_TOTAL_BYTES", "1000"),
])
def test_a_bad_value_is_refused_at_start(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        Settings()


def test_unrelated_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("GRADSERVE_NO_SUCH_SETTING", "1")
    monkeypatch.setenv("MAX_NODES", "1")  # no prefix: not ours
    assert Settings().max_nodes == Settings.model_fields["max_nodes"].default


def test_defaults():
    s = Settings()
    assert s.bind == "127.0.0.1:8000" and s.loopback
    assert s.api_keys == () and s.workers >= 1
    assert s.deadline_s > 0
    assert s.max_body_bytes >= 4 * math.ceil(2**24 * 4 / 3)  # a 16M float32 tensor in base64
    assert s.max_elements >= 2**24


@pytest.mark.parametrize(("bind", "loopback"), [
    ("127.0.0.1:8000", True), ("127.0.0.2:80", True), ("localhost:8000", True),
    ("[::1]:8000", True), ("0.0.0.0:8000", False), ("[::]:8000", False),
    ("10.1.2.3:8000", False), ("gradserve.example.com:443", False),
])
def test_loopback(bind, loopback):
    assert Settings(bind=bind).loopback is loopback


def test_public_limits_are_the_settings():
    s = Settings(max_nodes=9, max_elements=99, max_flops=9e9, deadline_s=9.5)
    assert {k: s.public_limits()[k] for k in ("max_nodes", "max_elements", "max_flops",
                                              "deadline_s")} == {
        "max_nodes": 9, "max_elements": 99, "max_flops": 9e9, "deadline_s": 9.5}


# ---- the defaults against the sizes of issue 3 -----------------------------------------

def plan(nodes, inputs, **kw) -> Plan:
    return Plan(nodes, inputs, limits=limits(Settings()), **kw)


def chain(n: int, op: str = "sin") -> list[dict]:
    nodes = [{"id": f"n{i}", "op": op, "args": [f"n{i - 1}" if i else "x"]} for i in range(n)]
    return nodes + [{"id": "loss", "op": "sum", "args": [f"n{n - 1}"]}]


def test_defaults_accept_a_100000_node_graph():
    p = plan(chain(99_999), {"x": Leaf((16,), True)}, grad={"of": "loss"})
    assert len(p.steps) == 100_000 and p.wrt == ["x"]


def test_defaults_accept_a_16m_element_tensor():
    big = (4096, 4096)  # 16,777,216 elements, 64 MiB in float32
    p = plan([{"id": "y", "op": "mul", "args": ["x", "w"]},
              {"id": "loss", "op": "mean", "args": ["y"]}],
             {"x": Leaf(big), "w": Leaf(big, True)}, grad={"of": "loss"})
    assert p.cost.max_elements == 4096 * 4096
    p64 = plan([{"id": "y", "op": "exp", "args": ["x"]}], {"x": Leaf(big)}, dtype="float64")
    assert p64.cost.max_elements == 4096 * 4096


def test_defaults_accept_a_4096_cube_matmul():
    plan([{"id": "y", "op": "matmul", "args": ["x", "w"]}],
         {"x": Leaf((4096, 4096)), "w": Leaf((4096, 4096))})


REFUSED = [
    # name, nodes, inputs, code
    ("one 40 GB input", [{"id": "y", "op": "neg", "args": ["x"]}],
     {"x": Leaf((100_000, 100_000))}, "tensor_too_large"),
    ("one 40 GB node", [{"id": "y", "op": "add", "args": ["u", "v"]}],
     {"u": Leaf((100_000, 1)), "v": Leaf((1, 100_000))}, "tensor_too_large"),
    ("640 kept 64 MiB nodes, 40 GB together",
     [{"id": f"m{i}", "op": "mul", "args": ["x", i]} for i in range(640)],
     {"x": Leaf((4096, 4096))}, "graph_too_large"),
    ("one 1e13-FLOP matmul", [{"id": "y", "op": "matmul", "args": ["x", "w"]}],
     {"x": Leaf((10_000, 50_000)), "w": Leaf((50_000, 10_000))}, "tensor_too_large"),
    ("1e13 FLOPs in 75 matmuls of 4096",
     [{"id": f"m{i}", "op": "matmul", "args": [f"m{i - 1}" if i else "x", "w"]}
      for i in range(75)],
     {"x": Leaf((4096, 4096)), "w": Leaf((4096, 4096))}, "graph_too_large"),
]


@pytest.mark.parametrize(("nodes", "inputs", "code"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_defaults_refuse_40_gb_and_1e13_flops(nodes, inputs, code):
    with pytest.raises(LimitExceeded) as e:
        plan(nodes, inputs)
    assert e.value.code == code


def test_defaults_refuse_a_graph_past_max_nodes():
    n = Settings().max_nodes
    with pytest.raises(LimitExceeded) as e:
        plan([{"id": f"n{i}", "op": "neg", "args": ["x"]} for i in range(n + 1)],
             {"x": Leaf((1,))})
    assert e.value.code == "graph_too_large"
