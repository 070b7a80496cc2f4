"""The service in a fabric: every switch's desired state holds every placement (remote ones behind
its next-hop link port), a change converges every switch that reaches it, a topology change
re-points them; a frame walked across the switches' real flow sets (fabsim) reaches its pod, and a
broadcast on a redundant topology reaches each edge port once. Without links nothing changes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ctlfakes import RecordingFabric, make_config
from ctlfakes import pod_request as request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "openflow"))  # the packet walkers
from fabsim import cables, spread  # noqa: E402
from ofsim import arp_request, ipv4  # noqa: E402

from controller import topology  # noqa: E402
from controller.errors import ConflictError, SwitchUnavailable  # noqa: E402
from controller.service import Service  # noqa: E402
from controller.topology import Link, LinkEnd  # noqa: E402
from openflow.model import Placement, PortRole, SwitchPort  # noqa: E402
from openflow.pipeline import desired_flows  # noqa: E402

LEAF1, LEAF2, SPINE = 1, 2, 3
N1_MAC, N2_MAC, N3_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"
ROUTER = "02:00:00:00:0e:01"
TRIANGLE = (Link(LinkEnd(LEAF1, 10), LinkEnd(SPINE, 1)), Link(LinkEnd(LEAF2, 10), LinkEnd(SPINE, 2)),
            Link(LinkEnd(LEAF1, 11), LinkEnd(LEAF2, 11)))
WIRES = cables(*(((link.a.dpid, link.a.port), (link.b.dpid, link.b.port)) for link in TRIANGLE))


def fabric_config(**overrides: Any) -> Any:
    """n1 on leaf 1 port 4, n2 on leaf 2 port 4, n3 on the spine port 4; the router on leaf 1 port 1;
    a triangle of links (leaf1-spine, leaf2-spine, leaf1-leaf2)."""
    return make_config(
        nodes={"n1": {"token": "t1" * 16, "dpid": LEAF1, "port": 4}, "n2": {"token": "t2" * 16, "dpid": LEAF2, "port": 4},
               "n3": {"token": "t3" * 16, "dpid": SPINE, "port": 4}},
        switches={str(LEAF1): {"trusted_ports": [1]}, str(LEAF2): {}, str(SPINE): {}},
        links=[{"a": f"{link.a}", "b": f"{link.b}"} for link in TRIANGLE],
        **overrides,
    )


@pytest.fixture
def placed(make_service: Callable[..., Service], fabric: RecordingFabric) -> Service:
    service = make_service(fabric_config())
    for name, mac, ip in (("n1", N1_MAC, "198.18.0.11"), ("n2", N2_MAC, "198.18.0.12"), ("n3", N3_MAC, "198.18.0.13")):
        service.register_node(name, mac=mac, ip=ip)
    fabric.calls.clear()
    return service


def flows_of(service: Service) -> dict[int, frozenset[Any]]:
    return {dpid: desired_flows(service.desired_state(dpid)) for dpid in (LEAF1, LEAF2, SPINE)}


def test_every_switch_holds_every_placement_behind_its_next_hop(placed: Service) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    mine = Placement(pod.ip, pod.mac, 4, pod.owner)
    assert mine in placed.desired_state(LEAF1).placements
    assert Placement(pod.ip, pod.mac, 11, pod.owner) in placed.desired_state(LEAF2).placements  # the direct link
    assert Placement(pod.ip, pod.mac, 1, pod.owner) in placed.desired_state(SPINE).placements
    assert Placement("198.18.0.12", N2_MAC, 11, "node/n2") in placed.desired_state(LEAF1).placements  # nodes too


def test_link_ports_and_the_tree_in_each_state(placed: Service) -> None:
    leaf1, leaf2 = placed.desired_state(LEAF1), placed.desired_state(LEAF2)
    assert [(port.number, port.role) for port in leaf1.ports] == [
        (1, PortRole.TRUSTED), (4, PortRole.NODE), (10, PortRole.LINK), (11, PortRole.LINK)]
    assert leaf1.tree_links == (10, 11)  # the tree: BFS from the lowest dpid (leaf 1) takes both its links
    assert leaf2.tree_links == (11,)  # leaf 2 - spine is off the tree
    assert placed.desired_state(SPINE).tree_links == (1,)


def test_a_pod_add_converges_every_switch_at_once(placed: Service, fabric: RecordingFabric) -> None:
    placed.allocate_and_place("n2", request("a"))
    assert fabric.calls == [(LEAF2, LEAF1, SPINE)]


def test_a_remote_switch_down_does_not_fail_the_add(placed: Service, fabric: RecordingFabric) -> None:
    fabric.down.add(SPINE)
    placed.allocate_and_place("n1", request("a"))
    assert fabric.calls == [(LEAF1, LEAF2, SPINE), (LEAF1,), (LEAF2,), (SPINE,)]


def test_the_pods_own_switch_down_fails_the_add(placed: Service, fabric: RecordingFabric) -> None:
    fabric.down.add(LEAF1)
    with pytest.raises(SwitchUnavailable):
        placed.allocate_and_place("n1", request("a"))
    assert all(pod.key != ("a", "eth0") for pod in placed.allocations())


def test_a_release_converges_every_switch(placed: Service, fabric: RecordingFabric) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    fabric.calls.clear()
    placed.release("n1", "a", "eth0")
    assert fabric.calls == [(LEAF1, LEAF2, SPINE)]
    assert not [p for p in placed.desired_state(LEAF2).placements if p.ip == pod.ip]


def test_a_topology_change_re_points_remote_placements(placed: Service, fabric: RecordingFabric) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    direct = placed.forwarding
    assert placed.set_forwarding(topology.compute((LEAF1, LEAF2, SPINE), TRIANGLE[:2], configured=TRIANGLE))
    assert Placement(pod.ip, pod.mac, 10, pod.owner) in placed.desired_state(LEAF2).placements  # via the spine
    assert placed.desired_state(LEAF2).tree_links == (10,)
    assert not placed.set_forwarding(placed.forwarding)  # the same: nothing to do
    placed.release("n1", "a", "eth0")  # while the direct link is down
    assert placed.set_forwarding(direct)  # back: what changed meanwhile is seen through the link too
    assert not [p for p in placed.desired_state(LEAF2).placements if p.ip == pod.ip]
    other = placed.allocate_and_place("n1", request("b")).pod
    assert Placement(other.ip, other.mac, 11, other.owner) in placed.desired_state(LEAF2).placements


def test_a_partition_leaves_unreachable_placements_out(placed: Service) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    placed.set_forwarding(topology.compute((LEAF1, LEAF2, SPINE), TRIANGLE[1:2], configured=TRIANGLE))
    assert not [p for p in placed.desired_state(LEAF2).placements if p.ip == pod.ip]
    assert [p.port for p in placed.desired_state(LEAF1).placements if p.ip == pod.ip] == [4]


def test_desired_states_survive_a_restart(placed: Service, make_service: Callable[..., Service]) -> None:
    for cid in "abc":
        placed.allocate_and_place("n1", request(cid))
    placed.allocate_and_place("n2", request("d"))
    restarted = make_service(fabric_config())
    for dpid in (LEAF1, LEAF2, SPINE):
        assert restarted.desired_state(dpid) == placed.desired_state(dpid)


# frames across the switches' flows ---------------------------------------------------------------
def test_a_frame_from_one_leaf_reaches_a_pod_on_the_other(placed: Service) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    frame = ipv4(src=N2_MAC, dst=pod.mac, ip_src="198.18.0.12", ip_dst=pod.ip)
    assert spread(flows_of(placed), WIRES, frame, at=(LEAF2, 4)) == {(LEAF1, 4): 1}


def test_arp_for_a_remote_pod_is_answered_on_the_requesters_switch(placed: Service) -> None:
    pod = placed.allocate_and_place("n1", request("a")).pod
    ask = arp_request(src=N3_MAC, spa="198.18.0.13", tpa=pod.ip)
    assert spread(flows_of(placed), WIRES, ask, at=(SPINE, 4)) == {(SPINE, 4): 1}


def test_a_pods_own_probe_is_answered_by_no_switch(placed: Service) -> None:
    """A pod on the spine probes for its address (RFC 5227): the probe floods along the tree
    (spine → leaf 1 → leaf 2), though leaf 2's own shortest path to the spine is its direct link;
    no switch may answer it with the pod's own placement."""
    pod = placed.allocate_and_place("n3", request("a")).pod
    probe = arp_request(src=pod.mac, spa="0.0.0.0", tpa=pod.ip)
    assert spread(flows_of(placed), WIRES, probe, at=(SPINE, 4)) == {(LEAF1, 4): 1, (LEAF1, 1): 1, (LEAF2, 4): 1}


@pytest.mark.parametrize("at", [(LEAF1, 4), (LEAF1, 1), (LEAF2, 4), (SPINE, 4)])
def test_a_broadcast_on_the_triangle_reaches_each_edge_port_once(placed: Service, at: tuple[int, int]) -> None:
    placed.allocate_and_place("n1", request("a"))
    src = {(LEAF1, 4): N1_MAC, (LEAF1, 1): ROUTER, (LEAF2, 4): N2_MAC, (SPINE, 4): N3_MAC}[at]
    ask = arp_request(src=src, spa={N1_MAC: "198.18.0.11", N2_MAC: "198.18.0.12", N3_MAC: "198.18.0.13"}
                      .get(src, "198.18.0.254"), tpa="198.18.0.99")  # nobody's: flooded
    edges = {(LEAF1, 4), (LEAF1, 1), (LEAF2, 4), (SPINE, 4)}
    assert spread(flows_of(placed), WIRES, ask, at=at) == {port: 1 for port in edges - {at}}


def test_unknown_unicast_reaches_the_trusted_port_only(placed: Service) -> None:
    frame = ipv4(src=N2_MAC, dst=ROUTER, ip_src="198.18.0.12", ip_dst="203.0.113.1")
    assert spread(flows_of(placed), WIRES, frame, at=(LEAF2, 4)) == {(LEAF1, 1): 1}


# no links: the single switch of before ------------------------------------------------------------
def test_without_links_a_switch_holds_its_own_placements_only(make_service: Callable[..., Service],
                                                              fabric: RecordingFabric) -> None:
    config = fabric_config()
    service = make_service(type(config)(**{**config.__dict__, "links": ()}))
    service.register_node("n1", mac=N1_MAC, ip="198.18.0.11")
    service.register_node("n2", mac=N2_MAC, ip="198.18.0.12")
    fabric.calls.clear()
    pod = service.allocate_and_place("n1", request("a")).pod
    assert fabric.calls == [(LEAF1,)]
    assert service.desired_state(LEAF2).placements == {Placement("198.18.0.12", N2_MAC, 4, "node/n2")}
    assert service.desired_state(LEAF1).ports == (SwitchPort(1, PortRole.TRUSTED), SwitchPort(4, PortRole.NODE))
    assert service.desired_state(LEAF1).tree_links == ()
    assert Placement(pod.ip, pod.mac, 4, pod.owner) in service.desired_state(LEAF1).placements


def test_a_node_cannot_claim_an_address_seen_behind_another_switchs_trusted_port(
        placed: Service, fabric: RecordingFabric) -> None:
    fabric.sightings[(SPINE, "198.18.0.50")] = (7,)  # a host behind the spine, not n1's own leaf
    with pytest.raises(ConflictError, match="node n1: 198.18.0.50"):
        placed.register_node("n1", mac=N1_MAC, ip="198.18.0.50")
