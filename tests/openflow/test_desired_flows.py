"""openflow.pipeline: behaviour of the flow set, asked of a packet walk (ofsim), not of flow text."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from ofsim import arp_request, ipv4, ipv6, tagged, walk
from ofstates import COOKIE, LEARN, N1, N2, P1, P2, PORT_N1, PORT_N2, PORT_ROUTER, ROUTER, states, two_node_state

from openflow.cookies import is_ours, tag_of
from openflow.flows import CONTROLLER, Learn, Output, make_match
from openflow.model import Placement, SwitchState, UnknownDestination
from openflow.pipeline import StateError, desired_flows, seen_cookie

FLOWS = desired_flows(two_node_state())


def reply_fields(frame: dict[str, object]) -> tuple[object, ...]:
    return tuple(frame[name] for name in ("eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa"))


# ARP responder ---------------------------------------------------------------------------------
def test_broadcast_request_for_macvlan_pod_is_answered_with_pod_mac() -> None:
    result = walk(FLOWS, arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.11"), in_port=PORT_N2)
    assert result.is_output(PORT_N2)  # out IN_PORT, nowhere else: not flooded
    assert reply_fields(result.only.frame) == (P1, N2, 2, P1, "198.18.0.11", N2, "198.18.0.2")


def test_ipvlan_reply_carries_node_mac() -> None:
    result = walk(FLOWS, arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.21"), in_port=PORT_N2)
    assert reply_fields(result.only.frame) == (N1, N2, 2, N1, "198.18.0.21", N2, "198.18.0.2")


def test_request_from_trusted_port_is_answered() -> None:
    result = walk(FLOWS, arp_request(src=ROUTER, spa="198.18.0.254", tpa="198.18.0.12"), in_port=PORT_ROUTER)
    assert result.is_output(PORT_ROUTER)
    assert result.only.frame["arp_sha"] == P2


def test_duplicate_address_detection_from_owner_port_passes_unanswered() -> None:
    probe = arp_request(src=P1, spa="0.0.0.0", tpa="198.18.0.11")
    assert walk(FLOWS, probe, in_port=PORT_N1).is_output("NORMAL")


def test_ipvlan_probe_from_owner_port_passes_unanswered() -> None:
    probe = arp_request(src=N1, spa="0.0.0.0", tpa="198.18.0.21")
    assert walk(FLOWS, probe, in_port=PORT_N1).is_output("NORMAL")


def test_gratuitous_arp_from_owner_passes_unanswered() -> None:
    announce = arp_request(src=P1, spa="198.18.0.11", tpa="198.18.0.11")
    result = walk(FLOWS, announce, in_port=PORT_N1)
    assert result.is_output("NORMAL")
    assert result.only.frame["arp_op"] == 1


def test_unicast_request_is_forwarded_not_answered() -> None:
    request = arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.11", dst=P1)
    result = walk(FLOWS, request, in_port=PORT_N2)
    assert result.is_output(PORT_N1)
    assert result.only.frame == request


def test_request_for_unplaced_ip_floods_normally() -> None:
    result = walk(FLOWS, arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.99"), in_port=PORT_N2)
    assert result.is_output("NORMAL")


def test_arp_reply_from_pod_is_forwarded() -> None:
    reply = {**arp_request(src=P1, spa="198.18.0.11", tpa="198.18.0.2", dst=N2), "arp_op": 2, "arp_tha": N2}
    assert walk(FLOWS, reply, in_port=PORT_N1).is_output(PORT_N2)


# port security ---------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    pytest.param(ipv4(src=P1, dst=N1, ip_src="198.18.0.11", ip_dst="198.18.0.1"), id="mac-of-other-port"),
    pytest.param(ipv4(src=N2, dst=N1, ip_src="198.18.0.11", ip_dst="198.18.0.1"), id="ip-of-other-port"),
    pytest.param(ipv4(src=N2, dst=N1, ip_src="198.18.0.99", ip_dst="198.18.0.1"), id="unplaced-ip"),
    pytest.param(ipv4(src=P2, dst=N1, ip_src="198.18.0.22", ip_dst="198.18.0.1"), id="ipvlan-ip-with-pod-mac"),
    pytest.param(arp_request(src=N2, spa="198.18.0.11", tpa="198.18.0.1"), id="arp-spa-of-other-port"),
    pytest.param(arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.1", sha=P1), id="arp-sha-mismatch"),
    pytest.param(arp_request(src=N2, spa="0.0.0.0", tpa="198.18.0.11"), id="probe-for-other-ip"),
    pytest.param(arp_request(src="02:00:00:00:00:99", spa="198.18.0.2", tpa="198.18.0.1"), id="unknown-mac"),
    pytest.param(ipv6(src=N2, dst=N1), id="ipv6-from-node-port"),
])
def test_spoofed_frames_from_node_port_are_dropped(frame: dict[str, object]) -> None:
    result = walk(FLOWS, frame, in_port=PORT_N2)
    assert result.dropped
    assert result.path[-1].priority == 0 and result.path[-1].table == "ingress"


@pytest.mark.parametrize("vid", [100, 0], ids=["dot1q-vlan100", "priority-tag"])
@pytest.mark.parametrize("frame", [
    pytest.param(ipv4(src=P2, dst=N1, ip_src="198.18.0.12", ip_dst="198.18.0.1"), id="ipv4"),
    pytest.param(arp_request(src=P2, spa="198.18.0.12", tpa="198.18.0.99"), id="arp"),
    pytest.param(arp_request(src=P2, spa="0.0.0.0", tpa="198.18.0.12"), id="probe"),
    pytest.param(ipv4(src=N2, dst=N1, ip_src="198.18.0.22", ip_dst="198.18.0.1"), id="ipvlan-ipv4"),
])
def test_tagged_frames_with_the_right_addresses_are_dropped(frame: dict[str, object], vid: int) -> None:
    """Untagged, each of these frames passes (it is its owner's); tagged, NORMAL would carry it into
    that VLAN on every trunk port. (An outer QinQ tag is a tag too: OVS shows it as `vlan_vid`.)"""
    assert not walk(FLOWS, frame, in_port=PORT_N2).dropped
    result = walk(FLOWS, tagged(frame, vid), in_port=PORT_N2)
    assert result.dropped
    assert result.path[-1].priority == 0 and result.path[-1].table == "ingress"


def test_a_tagged_frame_from_a_learn_mac_does_not_reach_the_controller() -> None:
    frame = tagged(arp_request(src=LEARN, spa="198.18.0.3", tpa="198.18.0.1"), 100)
    assert walk(FLOWS, frame, in_port=PORT_N1).dropped


def test_a_placement_in_a_vlan_sends_in_that_vlan_only() -> None:
    """What VLAN pools will build on: the VID is part of the placement's port security."""
    vlan_pod = Placement("198.18.0.13", "02:00:c6:12:01:13", PORT_N2, "default/vlan-7", vlan=7)
    flows = desired_flows(two_node_state(placements=(*two_node_state().placements, vlan_pod)))
    frame = ipv4(src=vlan_pod.mac, dst=N1, ip_src=vlan_pod.ip, ip_dst="198.18.0.1")
    assert walk(flows, tagged(frame, 7), in_port=PORT_N2).is_output(PORT_N1)
    assert walk(flows, frame, in_port=PORT_N2).dropped
    assert walk(flows, tagged(frame, 8), in_port=PORT_N2).dropped


@pytest.mark.parametrize("vlan", [0, 4095, 5000, -1])
def test_a_placement_with_an_impossible_vid_is_refused(vlan: int) -> None:
    bad = Placement("198.18.0.13", "02:00:c6:12:01:13", PORT_N2, "default/bad-vlan", vlan=vlan)
    with pytest.raises(StateError, match=f"default/bad-vlan: VLAN {vlan} is not a VID"):
        desired_flows(two_node_state(placements=(bad,)))


def test_frame_from_unknown_port_is_dropped() -> None:
    frame = ipv4(src=N1, dst=N2, ip_src="198.18.0.1", ip_dst="198.18.0.2")
    assert walk(FLOWS, frame, in_port=7).dropped


def test_trusted_port_passes_everything() -> None:
    frame = ipv6(src="02:00:00:00:00:99", dst=P1)
    assert walk(FLOWS, frame, in_port=PORT_ROUTER).is_output(PORT_N1)
    spoof = ipv4(src=N2, dst=P1, ip_src="198.18.0.2", ip_dst="198.18.0.11")
    assert walk(FLOWS, spoof, in_port=PORT_ROUTER).is_output(PORT_N1)


# l2 forwarding ---------------------------------------------------------------------------------
def test_ipv4_to_placed_macs_goes_to_their_port() -> None:
    assert walk(FLOWS, ipv4(src=P2, dst=P1, ip_src="198.18.0.12", ip_dst="198.18.0.11"), in_port=PORT_N2) \
        .is_output(PORT_N1)
    assert walk(FLOWS, ipv4(src=N1, dst=N2, ip_src="198.18.0.21", ip_dst="198.18.0.22"), in_port=PORT_N1) \
        .is_output(PORT_N2)


def test_frame_for_a_mac_behind_its_own_in_port_is_not_hairpinned() -> None:
    frame = ipv4(src=P1, dst=N1, ip_src="198.18.0.11", ip_dst="198.18.0.21")
    assert walk(FLOWS, frame, in_port=PORT_N1).dropped


def test_unknown_destination_normal() -> None:
    frame = ipv4(src=N1, dst="02:00:00:00:00:99", ip_src="198.18.0.1", ip_dst="198.18.0.99")
    assert walk(FLOWS, frame, in_port=PORT_N1).is_output("NORMAL")


def test_unknown_destination_drop_still_floods_broadcast() -> None:
    flows = desired_flows(two_node_state(unknown_destination=UnknownDestination.DROP))
    frame = ipv4(src=N1, dst="02:00:00:00:00:99", ip_src="198.18.0.1", ip_dst="198.18.0.99")
    assert walk(flows, frame, in_port=PORT_N1).dropped
    request = arp_request(src=N1, spa="198.18.0.1", tpa="198.18.0.99")
    assert walk(flows, request, in_port=PORT_N1).is_output("NORMAL")
    assert walk(flows, ipv4(src=P1, dst=N2, ip_src="198.18.0.11", ip_dst="198.18.0.2"), in_port=PORT_N1) \
        .is_output(PORT_N2)


def test_ipvlan_placements_sharing_a_mac_share_one_l2_flow() -> None:
    l2_for_n1 = [flow for flow in FLOWS if flow.table == "l2" and ("eth_dst", N1) in flow.match]
    assert len(l2_for_n1) == 1


# the controller --------------------------------------------------------------------------------
@pytest.mark.parametrize("port", [PORT_N1, 7])
def test_learn_mac_goes_to_controller_truncated(port: int) -> None:
    frame = arp_request(src=LEARN, spa="198.18.0.3", tpa="198.18.0.1")
    result = walk(FLOWS, frame, in_port=port)
    assert result.is_output("CONTROLLER")
    assert result.only.max_len == 128


def test_learn_mac_on_a_trusted_port_is_forwarded_not_diverted() -> None:
    """A trusted port never locates a node (the controller ignores it), so a node registered with a
    MAC that lives behind one must not cut that host off by sending its frames to the controller."""
    frame = ipv4(src=LEARN, dst=P1, ip_src="198.18.0.3", ip_dst="198.18.0.11")
    assert walk(FLOWS, frame, in_port=PORT_ROUTER).is_output(PORT_N1)


# what the switch records as seen ------------------------------------------------------------------
def test_a_trusted_port_records_its_sources_and_arp_senders_as_seen() -> None:
    seen = walk(FLOWS, arp_request(src=ROUTER, spa="198.18.0.254", tpa="198.18.0.99"), in_port=PORT_ROUTER).learned
    assert seen == (("seen", (("in_port", PORT_ROUTER), ("eth_src", ROUTER))),
                    ("seen", (("eth_type", 0x0806), ("in_port", PORT_ROUTER), ("arp_spa", "198.18.0.254"))))
    ip_frame = ipv4(src=ROUTER, dst=P1, ip_src="203.0.113.9", ip_dst="198.18.0.11")  # a routed source: not an IP of the segment
    assert walk(FLOWS, ip_frame, in_port=PORT_ROUTER).learned == (("seen", (("in_port", PORT_ROUTER), ("eth_src", ROUTER))),)


def test_node_ports_record_nothing_and_nothing_walks_into_seen() -> None:
    assert walk(FLOWS, arp_request(src=P1, spa="198.18.0.11", tpa="198.18.0.99"), in_port=PORT_N1).learned == ()
    assert walk(FLOWS, arp_request(src="02:00:00:00:00:99", spa="198.18.0.9", tpa="198.18.0.1"), in_port=PORT_N1).learned == ()
    assert not [flow for flow in FLOWS if flow.goto == "seen" or flow.table == "seen"]


def test_seen_records_carry_their_own_tag() -> None:
    """Reconciliation reads and deletes flows under the controller's tag: never these."""
    learns = {action for flow in FLOWS for action in flow.actions if isinstance(action, Learn)}
    assert {learn.cookie for learn in learns} == {seen_cookie(COOKIE)}
    assert not is_ours(seen_cookie(COOKIE), COOKIE)


def test_nothing_else_goes_to_controller() -> None:
    to_controller = [flow for flow in FLOWS if any(isinstance(a, Output) and a.port == CONTROLLER
                                                   for a in flow.actions)]
    assert [flow.match for flow in to_controller] == [(("eth_src", LEARN), ("vlan_vid", 0))]


# the state -------------------------------------------------------------------------------------
def test_every_flow_carries_the_tag() -> None:
    """The rest of each cookie names the flow's purpose and owner: test_pipeline_cookies.py."""
    assert {tag_of(flow.cookie) for flow in FLOWS} == {tag_of(COOKIE)}


def test_same_state_gives_equal_flows() -> None:
    assert desired_flows(two_node_state()) == FLOWS
    reordered = two_node_state(placements=tuple(reversed(two_node_state().placements)))
    assert desired_flows(reordered) == FLOWS


def test_uppercase_macs_give_the_same_flows() -> None:
    upper = two_node_state(placements=tuple(
        Placement(p.ip, p.mac.upper(), p.port, p.owner) for p in two_node_state().placements))
    assert desired_flows(upper) == FLOWS


@pytest.mark.parametrize("clash", [
    Placement("198.18.0.11", P2, PORT_N2, "default/thief"),
    Placement("198.18.0.11", N1, PORT_N1, "default/thief"),
    Placement("198.18.0.99", P1, PORT_N2, "default/thief"),
])
def test_contradictory_placements_are_refused(clash: Placement) -> None:
    state = two_node_state()
    with pytest.raises(StateError, match="default/thief"):
        desired_flows(two_node_state(placements=(*state.placements, clash)))


@given(states)
def test_every_match_is_in_canonical_form(state: SwitchState) -> None:
    """`placement_flows` writes its matches out by hand: they must be what `make_match` makes (and
    what a switch's flow stats parse back to), or a reconnect would see differences that are none."""
    upper = Placement("198.18.9.9", "02:AB:CD:EF:00:09", PORT_N1)
    for flow in desired_flows(replace(state, placements=(*state.placements, upper), ports=())) | desired_flows(state):
        assert flow.match == make_match(dict(flow.match)), flow
