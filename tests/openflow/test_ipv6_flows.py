"""openflow.ipv6 through the whole pipeline: ND answered by the switch, IPv6 port security, RA
guard, asked of a packet walk (ofsim). Addresses: the nodes and pods of `ofstates.dual_stack_state`,
fd00::1/2 (nodes), ::11/12 (macvlan pods), ::21/22 (ipvlan pods); each with its link-local fe80::<n>."""

from __future__ import annotations

import pytest
from ofsim import icmpv6, ipv4, ipv6, neighbor_advertisement, neighbor_solicitation, tagged, walk
from ofstates import N1, N2, P1, P2, PORT_N1, PORT_N2, PORT_ROUTER, ROUTER, dual_stack_state, two_node_state

from openflow.flows import NO_MAC
from openflow.model import Placement
from openflow.pipeline import StateError, desired_flows

FLOWS = desired_flows(dual_stack_state())
NA_FIELDS = ("eth_src", "eth_dst", "ipv6_src", "ipv6_dst", "icmpv6_type", "icmpv6_code", "ipv6_nd_target",
             "nd_reserved", "nd_options_type", "ipv6_nd_tll")


def advertised(frame: dict[str, object]) -> tuple[object, ...]:
    return tuple(frame[name] for name in NA_FIELDS)


def dropped_at_ingress(frame: dict[str, object], port: int) -> bool:
    result = walk(FLOWS, frame, in_port=port)
    return result.dropped and result.path[-1].table == "ingress"


# the responder -----------------------------------------------------------------------------------
@pytest.mark.parametrize("unicast", [False, True], ids=["solicited-node-multicast", "unicast"])
def test_a_solicitation_for_a_macvlan_pod_is_answered_in_place_with_its_mac(unicast: bool) -> None:
    ns = neighbor_solicitation(src=N2, ip_src="fd00::2", target="fd00::11", dst=P1 if unicast else None)
    result = walk(FLOWS, ns, in_port=PORT_N2)
    assert result.is_output(PORT_N2)  # back where it came from, nowhere else
    assert advertised(result.only.frame) == (P1, N2, "fd00::11", "fd00::2", 136, 0, "fd00::11", 0x60000000, 2, P1)


def test_an_ipvlan_pod_is_advertised_at_its_nodes_mac() -> None:
    ns = neighbor_solicitation(src=N2, ip_src="fe80::2", target="fd00::21")
    result = walk(FLOWS, ns, in_port=PORT_N2)
    assert advertised(result.only.frame) == (N1, N2, "fd00::21", "fe80::2", 136, 0, "fd00::21", 0x60000000, 2, N1)


def test_a_solicitation_from_a_trusted_port_is_answered() -> None:
    ns = neighbor_solicitation(src=ROUTER, ip_src="fd00::fe", target="fd00::12")
    result = walk(FLOWS, ns, in_port=PORT_ROUTER)
    assert result.is_output(PORT_ROUTER) and result.only.frame["ipv6_nd_tll"] == P2


def test_the_owners_own_solicitation_passes_unanswered() -> None:
    """What its kernel sends for its own address (duplicate address detection) reaches the segment."""
    for source in ("::", "fd00::11"):
        ns = neighbor_solicitation(src=P1, ip_src=source, target="fd00::11")
        result = walk(FLOWS, ns, in_port=PORT_N1)
        assert result.is_output("NORMAL") and result.only.frame == ns


def test_a_solicitation_without_a_source_link_layer_option_is_not_answered() -> None:
    """DAD from a host behind a trusted port: its answer would have no option to carry the MAC."""
    probe = neighbor_solicitation(src=ROUTER, ip_src="::", target="fd00::11")
    result = walk(FLOWS, probe, in_port=PORT_ROUTER)
    assert result.is_output("NORMAL") and result.only.frame == probe


@pytest.mark.parametrize(("sender", "target"), [
    ((P1, "fd00::11", PORT_N1), "fd00::99"),
    ((N2, "fe80::2", PORT_N2), "fe80::11"),  # a pod's link-local: its own kernel answers
], ids=["unplaced-address", "a-pods-link-local"])
def test_a_solicitation_for_what_is_not_placed_goes_the_normal_way(sender: tuple[str, str, int], target: str) -> None:
    mac, source, port = sender
    ns = neighbor_solicitation(src=mac, ip_src=source, target=target)
    result = walk(FLOWS, ns, in_port=port)
    assert result.is_output("NORMAL") and result.only.frame == ns


def test_nothing_walks_into_nd_reply_but_advertisements_the_responder_made() -> None:
    into = [flow for flow in FLOWS if flow.goto == "nd_reply"]
    assert into and all(flow.table == "responder" and ("icmpv6_type", 135) in flow.match for flow in into)


# port security -------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["fd00::11", "fe80::11"], ids=["address", "link-local"])
def test_a_pod_sends_from_its_address_and_its_link_local(source: str) -> None:
    frame = ipv6(src=P1, dst=P2, ip_src=source, ip_dst="fd00::12")
    assert walk(FLOWS, frame, in_port=PORT_N1).is_output(PORT_N2)


def test_a_dual_stack_pods_ipv4_still_passes() -> None:
    frame = ipv4(src=P1, dst=P2, ip_src="198.18.0.11", ip_dst="198.18.0.12")
    assert walk(FLOWS, frame, in_port=PORT_N1).is_output(PORT_N2)


@pytest.mark.parametrize("frame", [
    pytest.param(ipv6(src=P1, dst=P2, ip_src="fd00::12", ip_dst="fd00::2"), id="another-pods-address"),
    pytest.param(ipv6(src=P1, dst=P2, ip_src="fe80::12", ip_dst="fd00::2"), id="another-pods-link-local"),
    pytest.param(ipv6(src=P1, dst=P2, ip_src="fd00::99", ip_dst="fd00::2"), id="unplaced-address"),
    pytest.param(ipv6(src=P1, dst=P2, ip_src="fe80::99", ip_dst="fd00::2"), id="other-link-local"),
    pytest.param(ipv6(src=P1, dst=P2, ip_src="::", ip_dst="fd00::2"), id="unspecified-udp"),
    pytest.param(ipv6(src=N1, dst=P2, ip_src="fd00::11", ip_dst="fd00::2"), id="own-address-other-mac"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="fd00::11", target="fd00::1", sll=P2), id="ns-foreign-sll"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="fd00::12", target="fd00::1"), id="ns-foreign-source"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="::", target="fd00::12"), id="dad-for-another-pod"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="::", target="fd00::99"), id="dad-for-unplaced"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fd00::11", target="fd00::12"), id="na-for-another-pod"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fd00::12", target="fd00::12"), id="na-as-another-pod"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fd00::11", target="fd00::11", tll=P2), id="na-foreign-tll"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fe80::11", target="fd00::11"), id="na-source-not-target"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:01", ip_src="fe80::11", ip_dst="ff02::1", kind=134),
                 id="router-advertisement"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:01", ip_src="fd00::11", ip_dst="ff02::1", kind=134),
                 id="router-advertisement-from-global"),
    pytest.param(icmpv6(src=P1, dst=P2, ip_src="fe80::11", ip_dst="fe80::12", kind=137), id="redirect"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:16", ip_src="fe80::12", ip_dst="ff02::16", kind=143),
                 id="mld-report-from-another-link-local"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:01", ip_src="::", ip_dst="ff02::1", kind=130),
                 id="mld-query-from-unspecified"),
])
def test_spoofed_ipv6_from_a_pod_is_dropped(frame: dict[str, object]) -> None:
    assert dropped_at_ingress(frame, PORT_N1)


@pytest.mark.parametrize("frame", [
    pytest.param(neighbor_solicitation(src=P1, ip_src="fd00::11", target="fd00::1"), id="ns"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="fe80::11", target="fe80::1"), id="ns-from-link-local"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="::", target="fd00::11"), id="dad"),
    pytest.param(neighbor_solicitation(src=P1, ip_src="::", target="fe80::11"), id="dad-link-local"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fd00::11", target="fd00::11"), id="unsolicited-na"),
    pytest.param(neighbor_advertisement(src=P1, ip_src="fe80::11", target="fe80::11", dst=N2, ip_dst="fe80::2",
                                        tll=NO_MAC), id="solicited-na-without-option"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:16", ip_src="fe80::11", ip_dst="ff02::16", kind=143),
                 id="mldv2-report"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:16", ip_src="::", ip_dst="ff02::16", kind=143),
                 id="mldv2-report-from-unspecified"),
    pytest.param(icmpv6(src=P1, dst="33:33:ff:00:00:01", ip_src="::", ip_dst="ff02::1:ff00:1", kind=131),
                 id="mldv1-report-from-unspecified"),
    pytest.param(icmpv6(src=P1, dst="33:33:00:00:00:02", ip_src="fe80::11", ip_dst="ff02::2", kind=133),
                 id="router-solicitation"),
])
def test_the_honest_twins_leave_the_pod(frame: dict[str, object]) -> None:
    result = walk(FLOWS, frame, in_port=PORT_N1)
    assert not result.dropped, result.path
    assert result.emitted[0].frame == frame  # passed on as it is


@pytest.mark.parametrize("vid", [100, 0], ids=["dot1q-vlan100", "priority-tag"])
def test_tagged_ipv6_with_the_right_addresses_is_dropped(vid: int) -> None:
    frame = ipv6(src=P1, dst=P2, ip_src="fd00::11", ip_dst="fd00::12")
    assert not walk(FLOWS, frame, in_port=PORT_N1).dropped
    assert dropped_at_ingress(tagged(frame, vid), PORT_N1)
    ns = neighbor_solicitation(src=P1, ip_src="fd00::11", target="fd00::1")
    assert dropped_at_ingress(tagged(ns, vid), PORT_N1)


def test_an_ipv4_only_pod_sends_no_ipv6() -> None:
    flows = desired_flows(two_node_state())
    for frame in (ipv6(src=P1, dst=P2, ip_src="fe80::11", ip_dst="fe80::12"),
                  neighbor_solicitation(src=P1, ip_src="::", target="fd00::11")):
        result = walk(flows, frame, in_port=PORT_N1)
        assert result.dropped and result.path[-1].priority == 0


def test_a_trusted_port_passes_router_advertisements() -> None:
    ra = icmpv6(src=ROUTER, dst="33:33:00:00:00:01", ip_src="fe80::fe", ip_dst="ff02::1", kind=134)
    result = walk(FLOWS, ra, in_port=PORT_ROUTER)
    assert result.is_output("NORMAL")
    assert result.learned == (("seen", (("in_port", PORT_ROUTER), ("eth_src", ROUTER))),)  # not an ND sender


@pytest.mark.parametrize("frame", [
    neighbor_solicitation(src=ROUTER, ip_src="fd00::fe", target="fd00::99"),
    neighbor_advertisement(src=ROUTER, ip_src="fd00::fe", target="fd00::fe"),
], ids=["ns", "na"])
def test_a_trusted_port_records_its_nd_senders_as_seen(frame: dict[str, object]) -> None:
    assert walk(FLOWS, frame, in_port=PORT_ROUTER).learned == (
        ("seen", (("in_port", PORT_ROUTER), ("eth_src", ROUTER))),
        ("seen", (("eth_type", 0x86DD), ("in_port", PORT_ROUTER), ("ipv6_src", "fd00::fe"))))


# the state -------------------------------------------------------------------------------------
def test_ipvlan_pods_of_a_node_share_its_guard_flows() -> None:
    guards = [flow for flow in FLOWS if flow.table == "ingress" and flow.priority == 205
              and ("eth_src", N1) in flow.match]
    assert len(guards) == 4  # one each for RA, NS, NA, redirect: not one set per placement


@pytest.mark.parametrize("ip", ["fd00:0::5", "FD00::5", "fd00::x"])
def test_an_ipv6_address_not_in_compressed_form_is_refused(ip: str) -> None:
    bad = Placement(ip, "02:00:c6:12:01:13", PORT_N2, "default/odd")
    with pytest.raises(StateError, match=f"default/odd: {ip} is not an IPv6 address in compressed form"):
        desired_flows(two_node_state(placements=(bad,)))


def test_one_ipv6_address_placed_twice_is_refused() -> None:
    thief = Placement("fd00::11", P2, PORT_N2, "default/thief")
    with pytest.raises(StateError, match="default/thief"):
        desired_flows(dual_stack_state(placements=(*dual_stack_state().placements, thief)))
