"""Each worker's cache of plans, keyed by a graph's structure.

A plan (ids checked, nodes ordered, every shape inferred, costs refused or
accepted) depends on the nodes, the input shapes, `outputs`, `grad` and the
dtype, never on the values. A client that sends the same graph again with new
values, as a training loop or a batch does, gets the plan it already paid for,
as a JIT cache would: after the first request only the arithmetic is left.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from autograd import Plan

# A plan's memory, estimated: its Tensors and Steps (~540 bytes per tensor measured with
# tracemalloc on bench/engine.py's chain), and the request's nodes it keeps (attrs, the JSON
# of the key), a few Python objects per byte of their JSON.
PER_TENSOR = 600
PER_JSON_BYTE = 8


def plan_bytes(plan, json_bytes: int) -> int:
    return PER_TENSOR * plan.tensor_count + PER_JSON_BYTE * json_bytes


class PlanCache:
    """Least recently used plans, at most `max_plans` of them and `max_bytes` (estimated) in
    all: a few plans of large graphs must not take a worker's memory."""

    def __init__(self, max_plans: int, max_bytes: int):
        self.max_plans, self.max_bytes = max_plans, max_bytes
        self._plans: OrderedDict[Hashable, tuple[Plan, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], Plan], json_bytes: int = 0) -> Plan:
        """The plan for `key`, built (outside the lock: it may take a while) if not cached.
        `json_bytes`: the size of the nodes' JSON, for the estimate. A graph `build` refuses
        raises, and nothing is cached."""
        with self._lock:
            hit = self._plans.get(key)
            if hit is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return hit[0]
            self.misses += 1
        plan = build()
        size = plan_bytes(plan, json_bytes)
        if self.max_plans and size <= self.max_bytes:
            with self._lock:
                if key not in self._plans:
                    self._plans[key] = plan, size
                    self._bytes += size
                while len(self._plans) > self.max_plans or self._bytes > self.max_bytes:
                    _, (_, old) = self._plans.popitem(last=False)
                    self._bytes -= old
        return plan

    def __len__(self) -> int:
        return len(self._plans)
