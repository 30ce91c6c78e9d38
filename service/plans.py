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


class PlanCache:
    """Least recently used plans, at most `max_plans` of them and `max_nodes` nodes in all."""

    def __init__(self, max_plans: int, max_nodes: int):
        self.max_plans, self.max_nodes = max_plans, max_nodes
        self._plans: OrderedDict[Hashable, Plan] = OrderedDict()
        self._nodes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], Plan]) -> Plan:
        """The plan for `key`, built (outside the lock: it may take a while) if not cached.
        A graph `build` refuses raises, and nothing is cached."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return plan
            self.misses += 1
        plan = build()
        size = len(plan.steps)
        if self.max_plans and size <= self.max_nodes:
            with self._lock:
                if key not in self._plans:
                    self._plans[key] = plan
                    self._nodes += size
                while len(self._plans) > self.max_plans or self._nodes > self.max_nodes:
                    _, old = self._plans.popitem(last=False)
                    self._nodes -= len(old.steps)
        return plan

    def __len__(self) -> int:
        return len(self._plans)
