"""`GET /v1/topology` through the HTTP server (operators only), and the service's hook: a new
forwarding changes what every switch should hold (its link ports, its tree)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ctlfakes import TOKENS, RecordingFabric, make_config

from controller.api import Api
from controller.httpd import HttpServer
from controller.links import LinkMonitor
from controller.service import Service
from controller.store import Store
from controller.topology import Link, LinkEnd, compute
from openflow.model import PortRole

OPERATOR = "operator-secret"
SWITCHES = {"1": {"trusted_ports": [1], "name": "leaf1"}, "2": {"trusted_ports": [1, 2], "name": "leaf2"},
            "3": {"name": "spine"}}
LINKS = [{"a": "1:5", "b": "3:1"}, {"a": "2:5", "b": "3:2"}, {"a": "1:6", "b": "2:6"}]


class TopologyFabric(RecordingFabric):
    def __init__(self) -> None:
        super().__init__()
        self.monitor: LinkMonitor | None = None

    def topology(self) -> dict[str, Any]:
        assert self.monitor is not None
        status: dict[str, Any] = self.monitor.status(now=10.0)
        return status


@pytest.fixture
def fabric() -> TopologyFabric:
    return TopologyFabric()


@pytest.fixture
def fabric_service(make_service: Callable[..., Service]) -> Service:
    return make_service(make_config(switches=SWITCHES, links=LINKS))


@pytest.fixture
def port(fabric_service: Service, fabric: TopologyFabric) -> Iterator[int]:
    config = fabric_service.config
    fabric.monitor = LinkMonitor(config.links, {d: s.name for d, s in config.switches.items()}, now=0.0)
    fabric.monitor.switch_connected(1, now=1.0)
    fabric.monitor.switch_connected(2, now=1.0)
    fabric.monitor.heard(LinkEnd(1, 6), LinkEnd(2, 7), now=2.0)  # miscabled
    server = HttpServer(Api(fabric_service, tokens=TOKENS, operators=[OPERATOR]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def get(port: int, path: str, *, token: str | None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_topology_shows_switches_links_and_the_tree(port: int) -> None:
    status, body = get(port, "/v1/topology", token=OPERATOR)
    assert status == 200
    assert [(s["dpid"], s["name"], s["connected"]) for s in body["switches"]] == [
        ("0x1", "leaf1", True), ("0x2", "leaf2", True), ("0x3", "spine", False)]
    by_ends = {(link["a"], link["b"]): link for link in body["links"]}
    miscabled = by_ends["0x1:6", "0x2:6"]
    assert (miscabled["state"], miscabled["used"], miscabled["heard"]) == ("miscabled", False, {"0x1:6": "0x2:7"})
    assert miscabled["reason"] == "0x1:6 hears 0x2:7, expected 0x2:6" and miscabled["name"] == "leaf1-leaf2"
    assert by_ends["0x1:5", "0x3:1"]["state"] == "unconfirmed" and by_ends["0x1:5", "0x3:1"]["used"] is True
    assert body["tree"] == [{"a": "0x1:5", "b": "0x3:1"}, {"a": "0x2:5", "b": "0x3:2"}]


def test_topology_is_for_operators(port: int) -> None:
    assert get(port, "/v1/topology", token=None)[0] == 401
    assert get(port, "/v1/topology", token=TOKENS["n1"])[0] == 403


def test_topology_without_the_openflow_side_is_503(open_store: Callable[[], Store]) -> None:
    service = Service(open_store(), make_config(switches=SWITCHES, links=LINKS), now=lambda: 0.0,
                      fabric=RecordingFabric())
    server = HttpServer(Api(service, tokens=TOKENS, operators=[OPERATOR]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, body = get(server.server_address[1], "/v1/topology", token=OPERATOR)
    finally:
        server.shutdown()
    assert status == 503 and "topology is not known yet" in body["error"]


def test_a_new_forwarding_changes_link_ports_and_tree_of_each_switch(fabric_service: Service) -> None:
    state = fabric_service.desired_state(1)
    assert {(p.number, p.role) for p in state.ports if p.role is PortRole.LINK} == {(5, PortRole.LINK),
                                                                                     (6, PortRole.LINK)}
    assert state.tree_links == (5, 6)  # BFS from 1: 2 by port 6 (lower dpid), 3 by port 5
    assert fabric_service.desired_state(3).tree_links == (1,)

    config = fabric_service.config
    fabric_service.set_forwarding(compute(config.switches, [link for link in config.links
                                                            if link != Link(LinkEnd(1, 6), LinkEnd(2, 6))],
                                          configured=config.links))
    assert fabric_service.desired_state(1).tree_links == (5,)
    assert fabric_service.desired_state(3).tree_links == (1, 2)
    assert {p.number for p in fabric_service.desired_state(1).ports if p.role is PortRole.LINK} == {5, 6}


def test_without_links_a_switch_state_is_as_before(service: Service) -> None:
    state = service.desired_state(1)
    assert state.tree_links == () and not [p for p in state.ports if p.role is PortRole.LINK]
