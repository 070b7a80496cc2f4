"""The operators' read-only endpoints (controller/opsapi.py) through the HTTP server, and who may
read them: an operator token reads, writes nothing; a node's token reads no operator endpoint.

The OpenFlow side is a model switch at our own boundary (`Inspectable`): it holds what the last
`apply` converged it to, and a test changes it by hand as a person with ovs-ofctl would. The real
switch, read through the real OpenFlow session, is tests/ctl/test_ctl_lab.py's."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from ctlfakes import TOKENS, RecordingFabric, make_config, pod_request

from controller import config as config_module
from controller.api import Api
from controller.errors import SwitchUnavailable
from controller.httpd import HttpServer
from controller.opsapi import owner_names, parse_dpid
from controller.service import PlacementView, Service
from controller.switch import SessionStatus
from openflow import cookies
from openflow.flows import Flow
from openflow.pipeline import desired_flows

OPERATOR = "operator-secret"
N1 = {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11"}


class ModelSwitches(RecordingFabric):
    """Switch 1 connected: `apply` makes it hold the desired flows; switch 2 is not connected."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, frozenset[Flow]] = {}
        self.desired: Callable[[int], frozenset[Flow]] | None = None

    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        dpids = tuple(dpids)
        super().apply(dpids, timeout=timeout)
        for dpid in dpids:
            if dpid == 1 and self.desired is not None:
                self.held[1] = self.desired(1)

    def connected(self) -> list[int]:
        return [1]

    def session_status(self, dpid: int) -> SessionStatus | None:
        return SessionStatus("equal", 1_800_000_000.0, None, audit_interval=30.0,
                             last_audit=1_800_000_010.0) if dpid == 1 else None

    def read_flows(self, dpid: int, *, cookie: int) -> frozenset[Flow]:
        if dpid != 1:  # as controller.ofapp says it
            raise SwitchUnavailable(f"switch {dpid:016x} is not connected: its flows cannot be read")
        return self.held.get(dpid, frozenset())


@pytest.fixture
def fabric() -> ModelSwitches:
    return ModelSwitches()


def get(port: int, path: str, *, token: str | None = OPERATOR, method: str = "GET") -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=b"{}" if method != "GET" else None,
                       headers={"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


@pytest.fixture
def port(service: Service, fabric: ModelSwitches) -> Iterator[int]:
    """A served API where n1 is registered on switch 1 port 4 with two pods, switch 1 converged."""
    fabric.desired = lambda dpid: desired_flows(service.desired_state(dpid))
    service.register_node("n1", mac=N1["mac"], ip=N1["ip"])
    service.node_located(N1["mac"], dpid=1, port=4)
    service.allocate_and_place("n1", pod_request("a"))
    service.allocate_and_place("n1", pod_request("b", pool="small"))
    server = HttpServer(Api(service, tokens=TOKENS, operators=[OPERATOR]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_switches_tell_connected_role_flow_counts_and_sync(port: int, fabric: ModelSwitches) -> None:
    status, body = get(port, "/v1/switches")
    assert status == 200
    one, two = body["switches"]
    assert (one["dpid"], one["connected"], one["role"], one["in_sync"]) == (1, True, "equal", True)
    assert one["flows_desired"] == one["flows_actual"] > 0
    assert one["last_convergence"] == "2027-01-15T08:00:00.000+00:00"
    assert (one["audit_interval"], one["last_audit"]) == (30.0, "2027-01-15T08:00:10.000+00:00")
    assert (two["audit_interval"], two["last_audit"]) == (None, None)
    assert (two["dpid"], two["connected"], two["flows_actual"], two["in_sync"], two["role"]) == (2, False, None, None, None)

    fabric.held[1] = frozenset(sorted(fabric.held[1], key=Flow.sort_key)[1:])  # one flow deleted by hand
    one = get(port, "/v1/switches")[1]["switches"][0]
    assert (one["in_sync"], one["flows_actual"]) == (False, one["flows_desired"] - 1)


def test_flows_desired_actual_and_the_difference_the_worker_would_send(port: int, fabric: ModelSwitches,
                                                                       service: Service) -> None:
    desired = get(port, "/v1/switches/0x1/flows")[1]
    assert desired["state"] == "desired" and desired["dpid"] == 1
    pod_ip = next(view.ip for view in service.placements() if view.owner == "default/pod-a")
    responder = [f for f in desired["flows"] if f["table"] == "responder" and f["match"].get("arp_tpa") == pod_ip
                 and f["priority"] == 100]  # the answer (200: the owner's own request passes)
    assert len(responder) == 1 and responder[0]["text"].startswith("responder(1) prio=")
    assert {"table_id", "priority", "actions", "goto", "cookie", "purpose", "owner"} <= set(responder[0])
    assert get(port, "/v1/switches/0000000000000001/flows?state=actual")[1]["flows"] == desired["flows"]
    assert get(port, "/v1/switches/1/flows?state=diff")[1] == {
        "dpid": 1, "state": "diff", "in_sync": True, "to_delete": [], "to_add": [], "epoch": service.epoch}

    lost = next(f for f in fabric.held[1] if f.table == "responder" and f.priority == 100
                and ("arp_tpa", pod_ip) in f.match)
    fabric.held[1] = fabric.held[1] - {lost}  # deleted by hand
    answer = get(port, "/v1/switches/1/flows?state=diff")[1]
    assert answer["in_sync"] is False and answer["to_delete"] == []
    assert [f["text"] for f in answer["to_add"]] == [responder[0]["text"]]


def test_flows_of_a_switch_not_connected_or_unknown_or_badly_named(port: int) -> None:
    status, body = get(port, "/v1/switches/2/flows?state=actual")
    assert status == 503 and "switch 0000000000000002" in body["error"]
    assert get(port, "/v1/switches/2/flows")[0] == 200  # what it should hold is known all the same
    status, body = get(port, "/v1/switches/0x9/flows")
    assert status == 404
    assert body["error"] == ("switch 0000000000000009: not known to the controller "
                             "(known: 0000000000000001, 0000000000000002)")
    for bad in ("zz", "0xfffffffffffffffff", "-1"):
        status, body = get(port, f"/v1/switches/{bad}/flows")
        assert status == 400 and body["error"].startswith("dpid: "), (bad, body)
    status, body = get(port, "/v1/switches/1/flows?state=wanted")
    assert (status, body["error"]) == (400, "state: 'wanted' is not one of desired, actual, diff")


def test_pools_nodes_and_pods(port: int, service: Service) -> None:
    pools = {p["name"]: p for p in get(port, "/v1/pools")[1]["pools"]}
    assert (pools["default"]["size"], pools["default"]["allocated"], pools["default"]["default"]) == (100, 1, True)
    assert (pools["small"]["size"], pools["small"]["allocated"], pools["small"]["cooldown"]) == (5, 1, 0)
    assert pools["small"]["families"] == [{"family": 4, "subnet": "198.19.0.0/29", "size": 5, "allocated": 1,
                                           "reserved": 0, "cooldown": 0}]
    service.release("n1", "b", "eth0")
    small = next(p for p in get(port, "/v1/pools")[1]["pools"] if p["name"] == "small")
    assert (small["allocated"], small["cooldown"]) == (0, 1)

    assert get(port, "/v1/nodes")[1]["nodes"] == [
        {"name": "n1", "mac": N1["mac"], "ip": N1["ip"], "ip6": None, "dpid": 1, "port": 4, "pods": 1}]
    (pod,) = get(port, "/v1/pods")[1]["pods"]
    assert (pod["namespace"], pod["name"], pod["node"], pod["dpid"], pod["port"], pod["state"]) == (
        "default", "pod-a", "n1", 1, 4, "placed")


def test_an_operator_token_reads_every_get_and_writes_nothing(port: int) -> None:
    assert get(port, "/v1/placements")[0] == 200
    assert "stats" in get(port, "/v1/health")[1]
    assert get(port, "/v1/nodes/n1/pods")[0] == 200
    status, body = get(port, "/v1/nodes/n1", method="PUT")
    assert (status, body["error"]) == (403, "an operator token is read-only: PUT needs the node's own token")
    assert get(port, "/v1/nodes/n1/pods/a/eth0", method="DELETE")[0] == 403


@pytest.mark.parametrize("path", ["/v1/switches", "/v1/switches/1/flows", "/v1/pools", "/v1/nodes", "/v1/pods"])
def test_hostile_clients_on_operator_endpoints(port: int, path: str) -> None:
    status, body = get(port, path, token=TOKENS["n1"])
    assert status == 403 and body["error"].startswith("a node's token may not read operator endpoints"), body
    for token in (None, "guess", OPERATOR + "x"):
        status, body = get(port, path, token=token)
        assert status == 401 and body["error"].startswith("missing or invalid operator token"), (token, body)


def test_owner_names_prefer_the_node_for_a_shared_mac() -> None:
    views = [PlacementView("198.18.0.11", "02:00:00:00:01:01", "n1", 4, 1, "node/n1"),
             PlacementView("198.18.0.100", "02:00:00:00:01:01", "n1", 4, 1, "default/ipv"),
             PlacementView("198.18.0.101", "02:aa:00:00:00:01", "n1", 4, 1, "default/mac")]
    names = owner_names(views, ports={4: "node/n1", 1: "trusted port 1"})
    assert names[cookies.owner_id(cookies.mac_owner("02:00:00:00:01:01"))] == "node/n1"
    assert names[cookies.owner_id(cookies.ip_owner("198.18.0.100"))] == "default/ipv"
    assert names[cookies.owner_id(cookies.mac_owner("02:aa:00:00:00:01"))] == "default/mac"
    assert names[cookies.owner_id(cookies.port_owner(1))] == "trusted port 1"


@pytest.mark.parametrize("text, dpid", [("0x1", 1), ("1", 1), ("0000000000000010", 16), ("10", 10), ("0XfF", 255)])
def test_dpids_as_people_write_them(text: str, dpid: int) -> None:
    assert parse_dpid(text) == dpid


def test_operator_tokens_from_the_config_and_a_file(tmp_path: Any) -> None:
    (tmp_path / "ops").write_text("one\n\n  two  \n")
    config = make_config(api={"operator_tokens": ["zero"], "operator_token_file": str(tmp_path / "ops")})
    assert config.api.operator_tokens == ("zero", "one", "two")
    assert make_config().api.operator_tokens == ()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(config_module.ConfigError, match="api.operator_token_file: .* holds no token"):
        make_config(api={"operator_token_file": str(tmp_path / "empty")})
    with pytest.raises(config_module.ConfigError, match="api.operator_tokens: a token is empty"):
        make_config(api={"operator_tokens": [""]})
    with pytest.raises(config_module.ConfigError, match=r"api.operator_tokens\[0\]"):
        make_config(api={"operator_tokens": [3]})
