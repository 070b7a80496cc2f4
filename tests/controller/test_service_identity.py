"""The service's identity rules (controller/edge.py): where a node may be learned, what a node may
claim, which MAC a pod may take. A real SQLite store; the recording fabric stands in for what the
switches report as seen on their trusted ports (the real table: tests/security, tests/openflow)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from controller.errors import BadRequest, ConflictError, TemporaryError
from controller.service import Service
from openflow.model import Placement

from ctlfakes import Clock, RecordingFabric, make_config
from ctlfakes import pod_request as request

N1_MAC, N2_MAC, N3_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"
ROUTER_MAC = "02:00:00:00:00:fe"  # behind trusted port 1 of switch 1


@pytest.fixture
def ready(service: Service) -> Service:
    """n1 located on switch 1 port 4, n2 pinned to port 3, n3 registered and not located yet."""
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.register_node("n2", mac=N2_MAC, ip="198.18.0.12")
    service.register_node("n3", mac=N3_MAC, ip="198.18.0.13")
    service.node_located(N1_MAC, dpid=1, port=4)
    return service


def located(service: Service, node: str) -> int | None:
    return next((view.port for view in service.placements() if view.owner == f"node/{node}"), None)


# where a node is ---------------------------------------------------------------------------------
@pytest.mark.parametrize("port", [4, 3], ids=["a-located-nodes-port", "a-pinned-nodes-port"])
def test_a_node_is_never_learned_on_a_port_another_node_holds(ready: Service, port: int,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Every pod sits behind its node's port: so no pod's forged frame can locate another node."""
    with caplog.at_level(logging.WARNING, logger="underlay"):
        assert ready.node_located(N3_MAC, dpid=1, port=port) == frozenset()
    assert located(ready, "n3") is None
    assert ready.stats()["node_locations_refused"] == 1
    holder = "n1" if port == 4 else "n2"
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"node location refused node=n3 mac={N3_MAC} switch=0000000000000001 port={port} held_by={holder} "
                           "located=-"), line
    assert ready.node_located(N3_MAC, dpid=1, port=6) == {1}  # its own frame, on a free port
    assert located(ready, "n3") == 6


def test_a_pinned_port_is_held_before_its_node_registers(service: Service) -> None:
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    assert service.node_located(N1_MAC, dpid=1, port=3) == frozenset()  # n2's, by the config
    assert service.stats()["node_locations_refused"] == 1


def test_a_located_node_with_pods_never_moves(ready: Service) -> None:
    pod = ready.allocate_and_place("n1", request("a")).pod
    assert ready.node_located(N1_MAC, dpid=2, port=5) == frozenset()
    assert Placement(pod.ip, pod.mac, 4, pod.owner) in ready.desired_state(1).placements
    assert ready.stats()["node_locations_refused"] == 1
    ready.release("n1", "a", "eth0")
    assert ready.node_located(N1_MAC, dpid=2, port=5) == {1, 2}  # no pods: a recabled node moves


def test_a_refusal_repeated_by_a_flood_is_counted_each_time_and_logged_once_a_minute(
    ready: Service, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="underlay"):
        for _ in range(20):
            ready.node_located(N3_MAC, dpid=1, port=4)
        clock.advance(60)
        ready.node_located(N3_MAC, dpid=1, port=4)
    assert ready.stats()["node_locations_refused"] == 21
    lines = [r.getMessage() for r in caplog.records if "node location refused" in r.getMessage()]
    assert len(lines) == 2 and lines[1].endswith("repeated=19")


# what a node may claim ---------------------------------------------------------------------------
@pytest.mark.parametrize(("ip", "why"), [
    ("198.18.0.1", "198.18.0.1 is pool default's gateway"),
    ("198.19.0.1", "198.19.0.1 is pool small's gateway"),
    ("198.18.0.0", "198.18.0.0 is the network or broadcast address of pool default"),
    ("198.18.0.255", "198.18.0.255 is the network or broadcast address of pool default"),
    ("198.18.0.150", "198.18.0.150 is excluded from pool default"),
    ("198.18.0.120", "198.18.0.120 is in pool default's ranges"),
])
def test_a_node_cannot_claim_an_address_the_pools_reserve(make_service: Callable[..., Service], ip: str,
                                                          why: str) -> None:
    pools = make_config().pools
    default = pools["default"]
    service = make_service(make_config(pools={
        "default": {"subnet": default.subnet, "ranges": ["198.18.0.100-198.18.0.199"], "gateway": default.gateway,
                    "exclude": ["198.18.0.150"], "default": True},
        "small": {"subnet": "198.19.0.0/29", "gateway": "198.19.0.1"},
    }))
    with pytest.raises(ConflictError, match=f"node n1: {why}"):
        service.register_node("n1", mac=N1_MAC, ip=ip)
    assert service.placements() == []
    assert service.stats()["node_claims_refused"] == 1


def test_an_excluded_address_pinned_to_the_node_in_the_config_is_its_own(make_service: Callable[..., Service]) -> None:
    config = make_config(pools={"default": {"subnet": "198.18.0.0/24", "exclude": ["198.18.0.11"]}},
                         nodes={"n1": {"token": "t1", "ip": "198.18.0.11"}, "n3": {"token": "t3"}})
    service = make_service(config)
    with pytest.raises(ConflictError, match=r"node n3: 198.18.0.11 is node n1's \(pinned"):
        service.register_node("n3", mac=N3_MAC, ip="198.18.0.11")
    with pytest.raises(ConflictError, match=r"node n1: 198.18.0.12 is not nodes.n1.ip \(198.18.0.11\)"):
        service.register_node("n1", mac=N1_MAC, ip="198.18.0.12")
    assert service.register_node("n1", mac=N1_MAC, ip="198.18.0.11").node.ip == "198.18.0.11"


def test_a_pinned_mac_is_the_only_one_its_node_may_register_and_no_one_elses(
    make_service: Callable[..., Service]
) -> None:
    service = make_service(make_config(nodes={"n1": {"token": "t1", "mac": N1_MAC.upper()}, "n3": {"token": "t3"}}))
    with pytest.raises(ConflictError, match=f"node n1: MAC {N3_MAC} is not nodes.n1.mac"):
        service.register_node("n1", mac=N3_MAC, ip="198.18.0.11")
    with pytest.raises(ConflictError, match=f"node n3: MAC {N1_MAC} is node n1's"):
        service.register_node("n3", mac=N1_MAC, ip="198.18.0.13")
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    assert service.stats()["node_claims_refused"] == 2


def test_a_node_cannot_claim_a_mac_or_ip_its_switch_sees_behind_a_trusted_port(
    service: Service, fabric: RecordingFabric
) -> None:
    fabric.sightings[(1, ROUTER_MAC)] = (1,)
    fabric.sightings[(1, "198.18.0.2")] = (1,)
    with pytest.raises(ConflictError, match=f"node n1: MAC {ROUTER_MAC} is in use on the segment: seen lately on "
                                            "switch 0000000000000001 port 1"):
        service.register_node("n1", mac=ROUTER_MAC, ip="198.18.0.11")
    with pytest.raises(ConflictError, match="node n1: 198.18.0.2 is in use on the segment"):
        service.register_node("n1", mac=N1_MAC, ip="198.18.0.2")
    with pytest.raises(ConflictError, match="node n2: 198.18.0.2 is in use"):  # n2 is pinned on switch 1: asks it only
        service.register_node("n2", mac=N2_MAC, ip="198.18.0.2")
    assert fabric.seen_calls[-1] == ((1,), "198.18.0.2")
    assert service.stats()["node_claims_refused"] == 3
    assert service.placements() == []


def test_the_same_claim_again_is_not_asked_again_and_a_switch_down_does_not_fail_it(
    ready: Service, fabric: RecordingFabric
) -> None:
    fabric.seen_calls.clear()
    fabric.down.add(1)
    ready.register_node("n1", mac=N1_MAC, ip="198.18.0.11")  # an agent restart: its vetted identity
    assert fabric.seen_calls == []
    ready.register_node("n1", mac=N1_MAC, ip="198.18.0.21")  # a new IP: switch 1 (n1's) cannot tell
    assert fabric.seen_calls == [((1,), "198.18.0.21")]


# which MAC a pod may take ------------------------------------------------------------------------
def test_a_pod_cannot_ask_for_a_mac_a_switch_saw_on_a_trusted_port(ready: Service, fabric: RecordingFabric) -> None:
    fabric.sightings[(2, ROUTER_MAC)] = (2,)  # behind a trusted port of the other switch: the segment is one
    with pytest.raises(ConflictError, match=f"pod default/pod-a: MAC {ROUTER_MAC} is in use on the segment: "
                                            "seen lately on switch 0000000000000002 port 2"):
        ready.allocate_and_place("n1", request("a", mac=ROUTER_MAC))
    assert ready.list_pods("n1") == []
    assert ready.stats()["pod_macs_refused"] == 1


@pytest.mark.parametrize(("mac", "why"), [
    ("00:16:3e:00:00:01", "is a globally unique \\(vendor\\) MAC"),
    ("01:00:5e:00:00:01", "is a multicast address"),
    ("00:00:00:00:00:00", "is the all-zero address"),
    ("ff:ff:ff:ff:ff:ff", "is a multicast address"),
])
def test_a_pod_asks_for_a_locally_administered_unicast_mac(ready: Service, mac: str, why: str) -> None:
    with pytest.raises(BadRequest, match=f"mac: .*{why}"):
        ready.allocate_and_place("n1", request("a", mac=mac))


def test_global_macs_when_the_config_allows_them(make_service: Callable[..., Service]) -> None:
    service = make_service(make_config(allow_global_macs=True))
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    assert service.allocate_and_place("n1", request("a", mac="00:16:3E:00:00:01")).pod.mac == "00:16:3e:00:00:01"


def test_a_pod_cannot_take_a_nodes_mac_pinned_or_registered(make_service: Callable[..., Service]) -> None:
    service = make_service(make_config(nodes={"n1": {"token": "t1"}, "n3": {"token": "t3", "mac": N3_MAC}}))
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    for mac, holder in ((N1_MAC, "n1"), (N3_MAC, "n3")):  # n3 has not registered yet: its pin holds the MAC
        with pytest.raises(ConflictError, match=f"MAC {mac} is node {holder}'s uplink"):
            service.allocate_and_place("n1", request("a", mac=mac))


def test_in_a_batch_a_refused_mac_fails_only_its_own_request(ready: Service, fabric: RecordingFabric) -> None:
    fabric.sightings[(1, ROUTER_MAC)] = (1,)
    answers = ready.place_pods("n1", [request("a"), request("b", mac=ROUTER_MAC), request("c", mac="00:16:3e:00:00:01"),
                                      request("d", mac="02:aa:00:00:00:01")])
    assert [type(answer).__name__ for answer in answers] == ["Attachment", "ConflictError", "BadRequest", "Attachment"]


def test_a_retried_add_is_not_asked_again(ready: Service, fabric: RecordingFabric) -> None:
    first = ready.allocate_and_place("n1", request("a", mac="02:aa:00:00:00:01"))
    fabric.seen_calls.clear()
    fabric.sightings[(1, "02:aa:00:00:00:01")] = (1,)  # its own MAC, echoed back over an inter-switch link
    assert ready.allocate_and_place("n1", request("a", mac="02:aa:00:00:00:01")) == first
    assert fabric.seen_calls == []


def test_a_switch_that_cannot_be_asked_is_skipped_not_failed(ready: Service, fabric: RecordingFabric) -> None:
    fabric.down.add(2)
    assert ready.allocate_and_place("n1", request("a", mac="02:aa:00:00:00:01")).pod.mac == "02:aa:00:00:00:01"
    fabric.down.add(1)
    with pytest.raises(TemporaryError):  # its own switch: the placement itself fails
        ready.allocate_and_place("n1", request("b", mac="02:aa:00:00:00:02"))
