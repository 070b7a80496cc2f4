"""The controller's Prometheus metrics: definitions, the collector read at scrape time, the listener.

One `ControllerMetrics` per process, each with its own `CollectorRegistry` (never the library's
global one), so two controllers in one test process, or two tests, never share a count. The hot
paths (an allocation, a bundle, a packet-in, a REST request) only increment or observe; what is a
state rather than an event (pool usage, flows per table, connected switches and their role) is read
by `StateCollector` when Prometheus scrapes, from the callables it is given, and costs nothing in
between.

Names follow Prometheus' conventions: the `underlay_` prefix, base units (`_seconds`), counters end
in `_total` (prometheus_client adds it to a Counter's name). Label names are the project's agreed
ones (the JSON log keys are the same, controller/logs.py): `switch` (dpid, 16 hex digits, as the
logs write it), `node`, `pool`, `table`, `reason`, `route`, `status`, `result`, `step`, and `role`
(a switch connection's OpenFlow role, for HA). Every label's values are bounded: a REST route is its
pattern (`/v1/nodes/<node>/pods`), never the path.

The listener (`serve`) is off unless configured; `parse_listen` takes `HOST:PORT` or `:PORT`
(loopback), so a non-loopback address is only ever one written out in full.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.ipam import Usage
from openflow import cookies

# no `_created` twin of every counter and histogram: half the series, nothing lost (process-wide)
disable_created_metrics()  # type: ignore[no-untyped-call]
PREFIX = "underlay_"
LABELS = ("switch", "node", "pool", "table", "reason", "route", "status", "result", "step", "role")
"""Every label name a metric (or a JSON log line) of underlay may use."""
STEPS = ("ipam", "store", "switch")
"""The steps of an allocation: IPAM decision (under the service's lock), store commit, switch convergence."""
LOOPBACK = "127.0.0.1"
# an allocation's step takes ~0.1 ms (IPAM) to seconds (a switch that does not answer)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
"""The `route` of a request no route matched (404, 405): one value, whatever the path."""
ROUTE_KEY = "underlay.route"
"""Where controller/api.py leaves the matched route's pattern in a request's WSGI environ."""


class SwitchView(NamedTuple):
    """A connected switch as the scrape sees it: its role and its desired flows per table."""

    dpid: int
    role: str  # "master", "slave", "none" (not granted yet), or "equal" (no leader election)
    flows: dict[str, int]


def switch_label(dpid: int) -> str:
    return f"{dpid:016x}"


def packet_in_reason(cookie: int) -> str:
    """Why a frame came to us: the purpose of the flow that sent it, from its cookie (`learn`)."""
    return cookies.decode(cookie).purpose_label


class ControllerMetrics:
    """Every controller metric, registered in `registry` (a new one by default).

    `clock` (seconds, monotonic) times the allocation steps; injected for tests."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        reg = self.registry
        self.allocation = Histogram(
            f"{PREFIX}allocation_step_seconds", "Time an allocation spends in each step (ipam, store, switch)",
            ["step"], registry=reg, buckets=LATENCY_BUCKETS)
        self.convergence = Histogram(
            f"{PREFIX}convergence_seconds", "Time a switch convergence takes: read or diff, bundle, barrier",
            ["switch"], registry=reg, buckets=LATENCY_BUCKETS)
        self.flow_mods = Counter(f"{PREFIX}flow_mods", "Flow-mods sent to switches (inside bundles)",
                                 ["switch"], registry=reg)
        self.bundles = Counter(f"{PREFIX}bundles", "ONF bundles committed on switches", ["switch"], registry=reg)
        self.packet_ins = Counter(
            f"{PREFIX}packet_ins", "Packet-ins received, by the purpose of the flow that sent them (its cookie)",
            ["switch", "reason"], registry=reg)
        self.relocations = Counter(f"{PREFIX}node_relocations", "Located nodes seen again on another switch port",
                                   ["node"], registry=reg)
        self.store_failures = Counter(f"{PREFIX}store_commit_failures", "Store commits that failed", registry=reg)
        self.requests = Counter(f"{PREFIX}http_requests", "REST API requests answered, by route pattern and status",
                                ["route", "status"], registry=reg)
        # children bound once: `labels()` costs more than the observation itself (a lock, checks)
        self.steps = {step: self.allocation.labels(step) for step in STEPS}  # present from the first scrape
        self._answers: dict[tuple[str, int], Any] = {}

    def stopwatch(self) -> Stopwatch:
        return Stopwatch(self)

    def watch(self, *, pools: Callable[[], Iterable[Usage]],
              switches: Callable[[], Iterable[SwitchView]]) -> None:
        """Read these at every scrape: pool usage (from the service) and connected switches (from the app)."""
        self.registry.register(StateCollector(pools=pools, switches=switches))

    def answered(self, environ: Mapping[str, Any] | None, status: int) -> None:
        """Count a REST answer (controller/httpd.py calls this): its route is what controller/api.py
        put in the environ under ROUTE_KEY; UNMATCHED for no route, or an answer of the server's own."""
        key = (UNMATCHED if environ is None else environ.get(ROUTE_KEY, UNMATCHED), status)
        child = self._answers.get(key)
        if child is None:  # a few routes times a few statuses: bounded
            child = self._answers.setdefault(key, self.requests.labels(key[0], str(status)))
        child.inc()


class Stopwatch:
    """`lap(step)` observes the time since the previous lap (or since it was made) as that step."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        self._steps, self._clock = metrics.steps, metrics.clock
        self._last = self._clock()

    def lap(self, step: str) -> None:
        now = self._clock()
        self._steps[step].observe(now - self._last)
        self._last = now


@dataclass(frozen=True)
class StateCollector(Collector):
    """Gauges computed when scraped: nothing on the hot path keeps them up to date."""

    pools: Callable[[], Iterable[Usage]]  # each pool's families (controller/ipam.py): summed per pool
    switches: Callable[[], Iterable[SwitchView]]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = {field: GaugeMetricFamily(f"{PREFIX}pool_{field}", text, labels=["pool"]) for field, text in (
            ("size", "Addresses a pool may hand out (both families of a dual-stack pool)"),
            ("allocated", "Addresses of a pool held by pods"),
            ("reserved", "Addresses of a pool kept for a StatefulSet pod that is away"),
            ("cooldown", "Released addresses of a pool still cooling down"))}
        totals: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for usage in self.pools():
            totals[usage.pool].update({field: getattr(usage, field) for field in gauges})
        for name, counts in sorted(totals.items()):
            for field, gauge in gauges.items():
                gauge.add_metric([name], counts[field])
        connected = GaugeMetricFamily(f"{PREFIX}switch_connected", "Switches connected, with this controller's role",
                                      labels=["switch", "role"])
        flows = GaugeMetricFamily(f"{PREFIX}flows", "Flows the controller wants on a switch, per table "
                                  "(what it holds once converged)", labels=["switch", "table"])
        for switch in sorted(self.switches()):
            label = switch_label(switch.dpid)
            connected.add_metric([label, switch.role], 1)
            for table, count in sorted(switch.flows.items()):
                flows.add_metric([label, table], count)
        yield from (*gauges.values(), connected, flows)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # dynamic: nothing to check at registration


def parse_listen(text: str, *, what: str) -> tuple[str, int]:
    """`HOST:PORT` (an IP address; IPv6 in brackets) or `:PORT` (loopback) → (host, port)."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]") or LOOPBACK
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected HOST:PORT with an IP address, or :PORT for {LOOPBACK}") from None
    if not colon or not 0 < number < 65536:
        raise ValueError(f"{what} {text!r}: expected a port 1-65535")
    return host, number


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve `/metrics` (any path, as prometheus_client does) on host:port in a daemon thread."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
