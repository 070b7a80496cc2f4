"""openflow.fabric: a fabric switch's flooding along the tree, unknown unicast, remote placements,
asked of a packet walk (ofsim); and a lone switch's flows left exactly as they were."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given
from ofsim import arp_request, ipv4, neighbor_solicitation, walk
from ofstates import N1, N2, P1, PORT_N1, PORT_N2, PORT_ROUTER, ROUTER, states, two_node_state

from openflow import cookies
from openflow.fabric import fabric_flows, is_fabric
from openflow.flows import NORMAL, Output
from openflow.model import Placement, PortRole, SwitchPort, SwitchState, UnknownDestination
from openflow.pipeline import DesiredFlows, desired_flows
from openflow.tables import L2, RESPONDER, render

TREE, OFF_TREE = 5, 6  # link ports: one on the loop-free tree, one only for shortest paths
NEAR, FAR = "02:00:c6:12:02:01", "02:00:c6:12:02:02"  # pods on other switches, behind TREE and OFF_TREE
OUTSIDE = "02:00:c6:12:0e:01"  # a host nobody placed (behind some trusted port)


def fabric_state(**changes: object) -> SwitchState:
    base = two_node_state()
    state = replace(
        base,
        ports=(*base.ports, SwitchPort(TREE, PortRole.LINK), SwitchPort(OFF_TREE, PortRole.LINK)),
        placements=(*base.placements, Placement("198.18.0.31", NEAR, TREE, "default/near"),
                    Placement("198.18.0.32", FAR, OFF_TREE, "default/far")),
        tree_links=(TREE,),
    )
    return replace(state, **changes)  # type: ignore[arg-type]


FLOWS = desired_flows(fabric_state())


def outputs(frame: dict[str, object], in_port: int, flows: frozenset = FLOWS) -> list[object]:  # type: ignore[type-arg]
    return sorted(emitted.port for emitted in walk(flows, frame, in_port=in_port).emitted)  # type: ignore[type-var]


def broadcast(src: str) -> dict[str, object]:
    return arp_request(src=src, spa="198.18.0.2", tpa="198.18.0.99")  # for nobody placed: not answered


# flooding along the tree ---------------------------------------------------------------------
@pytest.mark.parametrize(("in_port", "src", "expected"), [
    (PORT_N2, N2, [PORT_N1, TREE, PORT_ROUTER]),
    (PORT_ROUTER, ROUTER, [PORT_N1, PORT_N2, TREE]),
    (TREE, NEAR, [PORT_N1, PORT_N2, PORT_ROUTER]),
    (OFF_TREE, FAR, []),  # a broadcast from a link off the tree is dropped: no loop
])
def test_broadcast_goes_to_every_other_flood_port(in_port: int, src: str, expected: list[int]) -> None:
    assert outputs(broadcast(src), in_port) == sorted(expected)


def test_no_flow_floods_with_normal() -> None:
    assert not [flow for flow in FLOWS if Output(NORMAL) in flow.actions]


@pytest.mark.parametrize(("in_port", "src", "expected"), [
    (PORT_N2, N2, [TREE, PORT_ROUTER]),  # never to a node port: every pod and node is known
    (PORT_ROUTER, ROUTER, [TREE]),
    (TREE, NEAR, [PORT_ROUTER]),
    (OFF_TREE, FAR, []),
])
def test_unknown_unicast_goes_to_trusted_and_tree_ports_only(in_port: int, src: str, expected: list[int]) -> None:
    frame = ipv4(src=src, dst=OUTSIDE, ip_src={N2: "198.18.0.2"}.get(src, "198.18.0.31"), ip_dst="198.18.0.99")
    assert outputs(frame, in_port) == sorted(expected)


def test_unknown_unicast_dropped_when_the_policy_says_drop() -> None:
    flows = desired_flows(fabric_state(unknown_destination=UnknownDestination.DROP))
    frame = ipv4(src=N2, dst=OUTSIDE, ip_src="198.18.0.2", ip_dst="198.18.0.99")
    assert outputs(frame, PORT_N2, flows) == []
    assert outputs(broadcast(N2), PORT_N2, flows) == [PORT_N1, TREE, PORT_ROUTER]


# remote placements --------------------------------------------------------------------------------
@pytest.mark.parametrize(("ip", "mac"), [("198.18.0.31", NEAR), ("198.18.0.32", FAR)])
def test_arp_for_a_remote_pod_is_answered_on_this_switch(ip: str, mac: str) -> None:
    result = walk(FLOWS, arp_request(src=N2, spa="198.18.0.2", tpa=ip), in_port=PORT_N2)
    assert result.is_output(PORT_N2) and result.only.frame["arp_sha"] == mac


def test_a_solicitation_for_a_remote_ipv6_pod_is_answered_on_this_switch() -> None:
    flows = desired_flows(fabric_state(placements=(*fabric_state().placements,
                                                   Placement("fd00::32", FAR, OFF_TREE, "default/far"))))
    ns = neighbor_solicitation(src=ROUTER, ip_src="fd00::fe", target="fd00::32")
    result = walk(flows, ns, in_port=PORT_ROUTER)
    assert result.is_output(PORT_ROUTER) and result.only.frame["ipv6_nd_tll"] == FAR


@pytest.mark.parametrize(("mac", "port"), [(NEAR, TREE), (FAR, OFF_TREE)])  # shortest path, tree or not
def test_traffic_to_a_remote_pod_goes_to_its_next_hop(mac: str, port: int) -> None:
    assert outputs(ipv4(src=N2, dst=mac, ip_src="198.18.0.2", ip_dst="198.18.0.3"), PORT_N2) == [port]
    assert outputs(ipv4(src=ROUTER, dst=mac, ip_src="198.18.0.254", ip_dst="198.18.0.3"), PORT_ROUTER) == [port]


def test_traffic_from_a_remote_pod_to_a_local_one_crosses_no_port_security() -> None:
    frame = ipv4(src=FAR, dst=P1, ip_src="198.18.0.32", ip_dst="198.18.0.11")
    assert outputs(frame, OFF_TREE) == [PORT_N1]


def test_a_pod_cannot_send_as_a_remote_pod_from_its_node_port() -> None:
    frame = ipv4(src=NEAR, dst=P1, ip_src="198.18.0.31", ip_dst="198.18.0.11")
    assert walk(FLOWS, frame, in_port=PORT_N2).dropped  # port security stays at the edge


def test_remote_owners_gratuitous_arp_crossing_the_fabric_is_flooded_not_answered() -> None:
    announce = arp_request(src=NEAR, spa="198.18.0.31", tpa="198.18.0.31")
    assert outputs(announce, TREE) == [PORT_N1, PORT_N2, PORT_ROUTER]


def test_frames_from_a_link_port_are_not_recorded_in_seen() -> None:
    assert not walk(FLOWS, ipv4(src=FAR, dst=P1, ip_src="198.18.0.32", ip_dst="198.18.0.11"), in_port=OFF_TREE).learned
    assert not walk(FLOWS, broadcast(NEAR), in_port=TREE).learned


def test_remote_placements_get_no_port_security_flows() -> None:
    remote = [flow for flow in FLOWS if NEAR in str(flow.match) or "198.18.0.31" in str(flow.match)]
    assert remote and {flow.table for flow in remote} == {RESPONDER, L2}


def test_a_trusted_port_turning_into_a_link_rebuilds_the_incremental_set() -> None:
    desired = DesiredFlows()
    desired.update(replace(fabric_state(), ports=tuple(replace(port, role=PortRole.TRUSTED) if port.number == TREE
                                                       else port for port in fabric_state().ports)))
    desired.update(fabric_state())
    assert desired.flows == desired_flows(fabric_state())


# cookies, incremental updates ------------------------------------------------------------------
def test_flood_flows_carry_the_flood_purpose_and_their_in_port() -> None:
    flood = [flow for flow in fabric_flows(fabric_state()) if flow.table == L2]
    assert flood and all(cookies.decode(flow.cookie).purpose is cookies.Purpose.FLOOD for flow in flood)
    for flow in flood:
        assert cookies.decode(flow.cookie).owner_id == cookies.owner_id(cookies.port_owner(dict(flow.match)["in_port"]))
        assert cookies.is_ours(flow.cookie, fabric_state().cookie)


def test_tree_change_moves_the_flooding_incrementally() -> None:
    desired = DesiredFlows()
    desired.update(fabric_state())
    moved = fabric_state(tree_links=(OFF_TREE,))
    appeared, vanished = desired.update(moved)
    assert desired.flows == desired_flows(moved)
    assert appeared and vanished and all(flow.table == L2 for flow in appeared | vanished)


def test_flood_flows_grow_with_ports_not_pods() -> None:
    more = fabric_state(placements=(*fabric_state().placements,
                                    *(Placement(f"198.18.1.{n}", f"02:00:c6:12:03:{n:02x}", TREE) for n in range(50))))
    assert list(fabric_flows(more)) == list(fabric_flows(fabric_state()))


# a lone switch ---------------------------------------------------------------------------------------
@given(states)
def test_a_switch_without_link_ports_has_no_fabric_flows(state: SwitchState) -> None:
    assert not is_fabric(state) and not list(fabric_flows(state))
    assert desired_flows(replace(state, tree_links=(TREE,))) == desired_flows(state)
    l2_defaults = {flow.actions for flow in desired_flows(state) if flow.table == L2 and flow.priority < 100}
    assert (Output(NORMAL),) in l2_defaults  # broadcast by NORMAL, as before the fabric


def test_lone_switch_flows_are_unchanged() -> None:
    """The single switch's flows (cookies aside) as main built them before the fabric, pinned by
    digest: a controller upgraded without links sends no flow-mod."""
    lines = sorted(render(flow.with_cookie(0)) for flow in desired_flows(two_node_state()))
    assert len(lines) == 44
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == LONE_SWITCH_DIGEST


LONE_SWITCH_DIGEST = "aff181327634441e3e2e8174fb07dc677eebb3c60294d79b3aebddd6f283ff61"


def test_lldp_from_link_ports_goes_to_the_controller() -> None:
    lldp = {"eth_src": NEAR, "eth_dst": "01:80:c2:00:00:0e", "vlan_vid": 0, "eth_type": 0x88CC}
    for port in (TREE, OFF_TREE):
        assert walk(FLOWS, lldp, in_port=port).only.port == "CONTROLLER"
    assert walk(FLOWS, {**lldp, "eth_src": N2}, in_port=PORT_N2).dropped  # a pod's LLDP meets port security
