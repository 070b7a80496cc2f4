"""VLAN pools in the pipeline (openflow.pipeline): a placement's VID is part of everything the switch
does for it, so two pools with one subnet in two VLANs never see each other. Asked of a packet walk
(ofsim), not of flow text."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ofsim import arp_request, double_tagged, ipv4, neighbor_solicitation, tagged, walk
from ofstates import N1, N2, PORT_N1, PORT_N2, PORT_ROUTER, ROUTER, two_node_state

from openflow import cookies
from openflow.model import Placement
from openflow.pipeline import PRIO_FENCE, DesiredFlows, StateError, desired_flows

IP = "198.18.6.100"  # the same address in both VLANs
BLUE, RED = "06:64:c6:12:06:64", "06:c8:c6:12:06:64"  # a pod in VLAN 100 on n1, one in VLAN 200 on n2
BLUE_POD = Placement(IP, BLUE, PORT_N1, "blue/web-0", vlan=100)
RED_POD = Placement(IP, RED, PORT_N2, "red/web-0", vlan=200)
STATE = two_node_state(placements=(*two_node_state().placements, BLUE_POD, RED_POD))
FLOWS = desired_flows(STATE)


def test_the_same_ip_in_two_vlans_is_two_placements() -> None:
    assert FLOWS  # no StateError
    flows = DesiredFlows()
    flows.update(STATE)
    assert flows.flows == FLOWS


@pytest.mark.parametrize("other", [replace(RED_POD, vlan=100), replace(RED_POD, vlan=None)],
                         ids=["same-vlan", "untagged-and-untagged"])
def test_the_same_ip_twice_in_one_vlan_is_refused(other: Placement) -> None:
    first = replace(BLUE_POD, vlan=other.vlan)
    state = two_node_state(placements=(first, other))
    where = "" if other.vlan is None else f" in VLAN {other.vlan}"
    with pytest.raises(StateError, match=f"{IP}{where} is already placed"):
        desired_flows(state)
    with pytest.raises(StateError, match=f"{IP}{where} is already placed"):
        DesiredFlows().update(state)


def test_the_incremental_set_tells_the_vlans_apart_when_one_goes() -> None:
    flows = DesiredFlows()
    flows.update(STATE)
    alone = two_node_state(placements=(*two_node_state().placements, BLUE_POD))
    flows.update(alone)
    assert flows.flows == desired_flows(alone)


@pytest.mark.parametrize(("vid", "answer"), [(100, BLUE), (200, RED)])
def test_an_arp_request_is_answered_in_its_own_vlan(vid: int, answer: str) -> None:
    request = tagged(arp_request(src=ROUTER, spa="198.18.6.1", tpa=IP), vid)
    result = walk(FLOWS, request, in_port=PORT_ROUTER)
    assert result.is_output(PORT_ROUTER)
    assert result.only.frame["arp_sha"] == answer
    assert result.only.frame["vlan_vid"] == 0x1000 | vid  # the reply stays in the VLAN


@pytest.mark.parametrize("vid", [None, 300])
def test_an_arp_request_from_another_vlan_is_not_answered(vid: int | None) -> None:
    request = arp_request(src=ROUTER, spa="198.18.6.1", tpa=IP)
    result = walk(FLOWS, request if vid is None else tagged(request, vid), in_port=PORT_ROUTER)
    assert result.is_output("NORMAL")  # the broadcast floods in its own VLAN, unanswered


def test_one_ip_untagged_and_in_a_vlan_is_answered_by_the_vlan_it_is_asked_in() -> None:
    """Untagged placements' flows match no tag (unchanged since before VLAN pools: no flow-mod on
    upgrade); a VLAN placement's, one priority above, win in their VLAN."""
    plain = Placement(IP, "02:00:c6:12:06:64", PORT_N2, "plain/web-0")
    flows = desired_flows(replace(STATE, placements=(*STATE.placements, plain)))
    for vid, answer in ((None, plain.mac), (100, BLUE), (200, RED)):
        request = arp_request(src=ROUTER, spa="198.18.6.1", tpa=IP)
        result = walk(flows, request if vid is None else tagged(request, vid), in_port=PORT_ROUTER)
        assert result.is_output(PORT_ROUTER) and result.only.frame["arp_sha"] == answer


def test_a_frame_in_another_vlan_is_not_forwarded_to_the_pod() -> None:
    """Dropped, not flooded: NORMAL would carry it to every port in that VLAN, the pod's among them."""
    frame = ipv4(src=ROUTER, dst=BLUE, ip_src="198.18.6.1", ip_dst=IP)
    assert walk(FLOWS, tagged(frame, 100), in_port=PORT_ROUTER).is_output(PORT_N1)
    for other in (tagged(frame, 200), tagged(frame, 300), frame):
        assert walk(FLOWS, other, in_port=PORT_ROUTER).dropped


def test_only_vlan_placements_have_a_fence() -> None:
    fences = [flow for flow in FLOWS if flow.table == "l2" and flow.priority == PRIO_FENCE]
    assert sorted(flow.match for flow in fences) == [(("eth_dst", BLUE),), (("eth_dst", RED),)]
    assert {cookies.decode(flow.cookie).purpose for flow in fences} == {cookies.Purpose.VLAN}


def test_a_pod_sends_in_its_vlan_only() -> None:
    frame = ipv4(src=BLUE, dst=ROUTER, ip_src=IP, ip_dst="198.18.6.1")
    assert not walk(FLOWS, tagged(frame, 100), in_port=PORT_N1).dropped
    for other in (frame, tagged(frame, 200), tagged(frame, 0)):
        assert walk(FLOWS, other, in_port=PORT_N1).dropped


def test_a_pod_cannot_send_as_the_same_ip_of_the_other_vlan() -> None:
    """Blue (n1) sends red's IP in red's VLAN, with its own MAC or red's: red is on n2's port."""
    for mac in (BLUE, RED):
        frame = tagged(ipv4(src=mac, dst=ROUTER, ip_src=IP, ip_dst="198.18.6.1"), 200)
        assert walk(FLOWS, frame, in_port=PORT_N1).dropped


def test_a_vlan_pod_asks_for_the_other_vlans_same_ip_in_vain() -> None:
    """The blue pod's own request for its IP (DAD) passes unanswered, in VLAN 100: red's answer
    (VLAN 200) is not given to it."""
    probe = tagged(arp_request(src=BLUE, spa="0.0.0.0", tpa=IP), 100)
    assert walk(FLOWS, probe, in_port=PORT_N1).is_output("NORMAL")


def test_ipv6_solicitations_are_answered_in_their_vlan_only() -> None:
    ip6 = "fd00:6::64"
    pods = (replace(BLUE_POD, ip=ip6), replace(RED_POD, ip=ip6))
    flows = desired_flows(two_node_state(placements=(*two_node_state().placements, *pods)))
    solicitation = neighbor_solicitation(src=ROUTER, ip_src="fd00:6::1", target=ip6, sll=ROUTER)
    for vid, answer in ((100, BLUE), (200, RED)):
        result = walk(flows, tagged(solicitation, vid), in_port=PORT_ROUTER)
        assert result.is_output(PORT_ROUTER) and result.only.frame["ipv6_nd_tll"] == answer
    assert not walk(flows, solicitation, in_port=PORT_ROUTER).is_output(PORT_ROUTER)


def test_an_ipvlan_node_holds_untagged_and_vlan_pods_on_one_mac() -> None:
    """ipvlan pods answer at their node's MAC; in a VLAN that MAC is forwarded in the VLAN too."""
    ipvlan = Placement(IP, N1, PORT_N1, "blue/ipv-0", vlan=100)
    flows = desired_flows(two_node_state(placements=(*two_node_state().placements, ipvlan)))
    frame = ipv4(src=N2, dst=N1, ip_src="198.18.6.2", ip_dst=IP)
    assert walk(flows, frame, in_port=PORT_ROUTER).is_output(PORT_N1)
    assert walk(flows, tagged(frame, 100), in_port=PORT_ROUTER).is_output(PORT_N1)


@pytest.mark.parametrize("inner", [200, 100, 0], ids=["other-vlan-inside", "same-vlan-inside", "priority-inside"])
def test_a_double_tagged_frame_does_not_hop(inner: int) -> None:
    """Open vSwitch parsing two tags shows the payload's eth_type: the allow flow matches on the
    outer tag; table `vlan` finds the second tag once the first is popped, and drops the frame."""
    frame = ipv4(src=BLUE, dst=ROUTER, ip_src=IP, ip_dst="198.18.6.1")
    assert walk(FLOWS, double_tagged(frame, 100, inner), in_port=PORT_N1).dropped


def test_a_single_tagged_frame_leaves_with_its_one_tag_back_on() -> None:
    frame = ipv4(src=BLUE, dst=RED, ip_src=IP, ip_dst="198.18.6.1")
    assert walk(FLOWS, tagged(frame, 100), in_port=PORT_N1).dropped  # red's MAC in VLAN 100: the fence
    result = walk(FLOWS, tagged(replace_dst(frame, ROUTER), 100), in_port=PORT_N1)
    assert [flow.table for flow in result.path][:2] == ["ingress", "vlan"]
    assert result.is_output("NORMAL")
    assert result.only.frame["vlan_vid"] == 0x1000 | 100 and "vlan_vid1" not in result.only.frame


def replace_dst(frame: dict[str, object], mac: str) -> dict[str, object]:
    return {**frame, "eth_dst": mac}


def test_an_arp_request_from_a_vlan_pod_is_answered_in_its_vlan() -> None:
    other = Placement("198.18.6.101", "06:64:c6:12:06:65", PORT_N2, "blue/web-1", vlan=100)
    flows = desired_flows(replace(STATE, placements=(*STATE.placements, other)))
    request = tagged(arp_request(src=BLUE, spa=IP, tpa=other.ip), 100)
    result = walk(flows, request, in_port=PORT_N1)
    assert result.is_output(PORT_N1) and result.only.frame["arp_sha"] == other.mac
    assert result.only.frame["vlan_vid"] == 0x1000 | 100
