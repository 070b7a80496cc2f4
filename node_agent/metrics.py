"""The node agent's Prometheus metrics: each CNI ADD and DEL, its latency and its result code.

One `AgentMetrics` per process with its own registry (controller/metrics.py says why and how the
listener is configured: the same `HOST:PORT` rules, no listener unless configured). `result` is the
CNI result code: "0" for success, else the error code the plugin returned (cni/spec.py: 11 for a
try-again-later, 100 for a bug...), a bounded set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from controller.metrics import LATENCY_BUCKETS, PREFIX

COMMANDS = ("ADD", "DEL")
"""The commands measured: a pod's coming and going (CHECK, GC and STATUS are housekeeping)."""


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.latency = {command: Histogram(
            f"{PREFIX}cni_{command.lower()}_seconds", f"Time the agent takes to answer a CNI {command}, by result code",
            ["result"], registry=self.registry, buckets=LATENCY_BUCKETS) for command in COMMANDS}
        for histogram in self.latency.values():
            histogram.labels("0")  # present from the first scrape

    def observe(self, command: str, *, result: int, seconds: float) -> None:
        histogram = self.latency.get(command)
        if histogram is not None:
            histogram.labels(str(result)).observe(seconds)
