"""The controller's metrics (controller/metrics.py): names and labels by Prometheus' conventions,
what each hook counts, read back through prometheus_client's own exposition and text parser."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctlfakes import TOKENS, Clock, RecordingFabric, break_commits
from ctlfakes import pod_request as request
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller import metrics as m
from controller.api import Api
from controller.httpd import HttpServer
from controller.ipam import Usage
from controller.service import Service
from controller.store import StoreError
from openflow import cookies

N1_MAC = "02:00:00:00:01:01"


def samples(metrics: m.ControllerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape, through the text format and its parser."""
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: m.ControllerMetrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


class Ticking:
    """A clock that moves `step` seconds on each read: each lap of a stopwatch then lasts `step`."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def metrics() -> m.ControllerMetrics:
    made = m.ControllerMetrics()
    made.watch(pools=lambda: [Usage("default", 4, "198.18.0.0/24", 100, 3, 0, 1),
                              Usage("default", 6, "fd00:18::/64", 100, 3, 2, 0)],  # a dual-stack pool: summed
               switches=lambda: [m.SwitchView(1, "master", {"classify": 4, "l2": 2})])
    return made


@pytest.fixture
def ready(make_service: Callable[..., Service], metrics: m.ControllerMetrics) -> Service:
    service = make_service(metrics=metrics)
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    return service


def test_names_units_and_labels_follow_the_conventions(metrics: m.ControllerMetrics) -> None:
    """Every family is underlay_*, counters end in _total, durations are histograms in seconds,
    and every label name is one of the agreed ones."""
    metrics.flow_mods.labels("0000000000000001").inc()
    families = list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))

    names = {family.name: family.type for family in families}
    assert all(name.startswith("underlay_") for name in names)
    assert {name for name, kind in names.items() if kind == "counter"} == {
        "underlay_flow_mods", "underlay_bundles", "underlay_packet_ins", "underlay_node_relocations",
        "underlay_store_commit_failures", "underlay_http_requests"}
    assert {name for name, kind in names.items() if kind == "histogram"} == {
        "underlay_allocation_step_seconds", "underlay_convergence_seconds"}
    assert {name for name, kind in names.items() if kind == "gauge"} == {
        "underlay_pool_size", "underlay_pool_allocated", "underlay_pool_reserved", "underlay_pool_cooldown",
        "underlay_switch_connected", "underlay_flows"}
    counter_samples = {s.name for f in families if f.type == "counter" for s in f.samples}
    assert all(name.endswith("_total") for name in counter_samples)
    labels = {label for f in families for s in f.samples for label in s.labels if label not in ("le",)}
    assert labels <= set(m.LABELS)


def test_scrape_time_state_comes_from_the_callables(metrics: m.ControllerMetrics) -> None:
    assert value(metrics, "underlay_pool_size", pool="default") == 200
    assert value(metrics, "underlay_pool_allocated", pool="default") == 6
    assert value(metrics, "underlay_pool_reserved", pool="default") == 2
    assert value(metrics, "underlay_pool_cooldown", pool="default") == 1
    assert value(metrics, "underlay_switch_connected", switch="0000000000000001", role="master") == 1
    assert value(metrics, "underlay_flows", switch="0000000000000001", table="classify") == 4


def test_each_process_has_its_own_registry() -> None:
    one, two = m.ControllerMetrics(), m.ControllerMetrics()
    one.store_failures.inc()
    assert value(one, "underlay_store_commit_failures_total") == 1
    assert value(two, "underlay_store_commit_failures_total") == 0


def test_an_allocation_observes_each_step(make_service: Callable[..., Service]) -> None:
    metrics = m.ControllerMetrics(clock=Ticking(0.002))
    service = make_service(metrics=metrics)
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.node_located(N1_MAC, dpid=1, port=4)

    service.allocate_and_place("n1", request("a"))

    for step in m.STEPS:
        assert value(metrics, "underlay_allocation_step_seconds_count", step=step) == 1
        assert value(metrics, "underlay_allocation_step_seconds_sum", step=step) == pytest.approx(0.002)


def test_a_failed_switch_observes_no_switch_step(ready: Service, fabric: RecordingFabric,
                                                  metrics: m.ControllerMetrics) -> None:
    fabric.down.add(1)
    with pytest.raises(Exception, match="did not answer"):
        ready.allocate_and_place("n1", request("a"))
    assert value(metrics, "underlay_allocation_step_seconds_count", step="ipam") == 1
    assert value(metrics, "underlay_allocation_step_seconds_count", step="switch") == 0


def test_a_failed_commit_is_counted(ready: Service, metrics: m.ControllerMetrics) -> None:
    break_commits(ready.store)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        ready.allocate_and_place("n1", request("a"))
    assert value(metrics, "underlay_store_commit_failures_total") == 1


def test_a_node_moving_is_a_relocation_its_first_sighting_is_not(ready: Service, metrics: m.ControllerMetrics) -> None:
    assert value(metrics, "underlay_node_relocations_total", node="n1") == 0
    assert ready.node_located(N1_MAC, dpid=2, port=5) == {1, 2}
    assert value(metrics, "underlay_node_relocations_total", node="n1") == 1


def test_pool_gauges_follow_the_service_at_each_scrape(make_service: Callable[..., Service], clock: Clock) -> None:
    metrics = m.ControllerMetrics()
    service = make_service(metrics=metrics)
    metrics.watch(pools=service.pool_usage, switches=list)
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    service.allocate_and_place("n1", request("a"))
    service.allocate_and_place("n1", request("b"))
    service.release("n1", "a", "eth0")

    def pool(name: str) -> tuple[float, ...]:
        return tuple(value(metrics, f"underlay_pool_{field}", pool=name) for field in ("size", "allocated", "cooldown"))

    assert pool("default") == (100, 1, 1)
    assert pool("small") == (5, 0, 0)  # a /29 but its network, broadcast and gateway
    clock.advance(31)  # past release_cooldown
    assert pool("default") == (100, 1, 0)


def test_packet_in_reason_is_the_purpose_in_the_cookie() -> None:
    assert m.packet_in_reason(cookies.make(0x55AA << 48, cookies.Purpose.LEARN, "mac:02:00:00:00:01:01")) == "learn"
    assert m.packet_in_reason(0x55AA_0000_0000_0000 | 0xEE << 40) == "purpose238"


@pytest.mark.parametrize("text, expected", [(":9464", ("127.0.0.1", 9464)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
                                            ("[::1]:9464", ("::1", 9464))])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert m.parse_listen(text, what="--metrics") == expected


@pytest.mark.parametrize("text", ["localhost:9464", "9464", "127.0.0.1:0", "127.0.0.1:x", "127.0.0.1:70000"])
def test_parse_listen_refuses_what_is_not_an_ip_and_port(text: str) -> None:
    with pytest.raises(ValueError, match="--metrics"):
        m.parse_listen(text, what="--metrics")


@pytest.fixture
def served(service: Service, metrics: m.ControllerMetrics) -> Iterator[int]:
    server = HttpServer(Api(service, tokens=TOKENS), "127.0.0.1", 0, answered=metrics.answered)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def ask(port: int, method: str, path: str, *, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers={"Authorization": f"Bearer {TOKENS['n1']}", **(headers or {})})
    status = connection.getresponse().status
    connection.close()
    return status


def test_rest_requests_are_counted_by_route_pattern_never_by_path(served: int, metrics: m.ControllerMetrics) -> None:
    """Paths chosen by clients (node names, container ids, junk) never become label values."""
    for node in ("n1", "n2", "x" * 40):
        ask(served, "GET", f"/v1/nodes/{node}/pods")
    for junk in range(3):
        ask(served, "GET", f"/no/such/{junk}")
    ask(served, "GET", "/v1/health", headers={"Content-Length": "x"})  # refused by the server itself

    requests = {labels: count for (name, labels), count in samples(metrics).items()
                if name == "underlay_http_requests_total"}
    assert requests == {
        (("route", "/v1/nodes/<node>/pods"), ("status", "404")): 1,  # n1's own: not registered yet
        (("route", "/v1/nodes/<node>/pods"), ("status", "401")): 2,  # another node's token: refused
        (("route", "unmatched"), ("status", "404")): 3,
        (("route", "unmatched"), ("status", "400")): 1,
    }


def test_the_listener_serves_the_registry(metrics: m.ControllerMetrics) -> None:
    server = m.serve(metrics.registry, "127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"underlay_pool_size", "underlay_allocation_step_seconds", "underlay_http_requests"} <= families


def test_role_of_a_switch_without_election_is_equal() -> None:
    """SwitchSession.view on a session that has not run: no role claimed, no flows."""
    from controller.switch import SwitchSession

    class Datapath:
        id = 0xAB

    view = SwitchSession(Datapath(), lambda dpid: pytest.fail("not asked")).view()
    assert view == m.SwitchView(0xAB, "equal", {})


def test_metrics_listen_only_when_configured(tmp_path: Path) -> None:
    from controller import config as configuration
    from controller.main import load_config, parse_args

    base = tmp_path / "controller.toml"
    top = 'store = "s.sqlite"\n[api]\nplaintext = true\n'
    base.write_text(top)
    assert load_config(parse_args(["--config", str(base)])).metrics is None
    flagged = load_config(parse_args(["--config", str(base), "--metrics", "127.0.0.1:9500"])).metrics
    assert flagged == configuration.MetricsConfig("127.0.0.1", 9500)
    base.write_text(top + "[metrics]\n")
    assert load_config(parse_args(["--config", str(base)])).metrics == configuration.MetricsConfig("127.0.0.1", 9464)
    base.write_text(top + '[metrics]\nhost = "localhost"\n')
    with pytest.raises(configuration.ConfigError, match="metrics.host"):
        load_config(parse_args(["--config", str(base)]))
