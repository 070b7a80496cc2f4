"""The cookies the pipeline stamps: each flow names why it exists and whose it is, and a flow that
placements share gets one cookie from all of them (or the set would hold one key twice)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from ofstates import COOKIE, LEARN, N1, P1, PORT_N1, PORT_ROUTER, dual_stack_state, states, two_node_state

from openflow import cookies
from openflow.cookies import Purpose
from openflow.flows import Flow
from openflow.model import Placement, SwitchState, link_local
from openflow.pipeline import DesiredFlows, desired_flows

FLOWS = desired_flows(dual_stack_state())


def described(flow: Flow) -> tuple[Purpose | int, int]:
    decoded = cookies.decode(flow.cookie)
    return decoded.purpose, decoded.owner_id


def owner(key: str) -> int:
    return cookies.owner_id(key)


def named(value: str) -> list[Flow]:
    """The flows whose match names `value`."""
    return [flow for flow in FLOWS if any(v == value for _, v in flow.match)]


def test_every_flow_has_a_known_purpose_under_the_tag() -> None:
    for flow in FLOWS:
        decoded = cookies.decode(flow.cookie)
        assert decoded.tag == cookies.tag_of(COOKIE) and isinstance(decoded.purpose, Purpose), flow
        assert decoded.purpose is not Purpose.SEEN


def test_an_ipv4_placement_owns_its_port_security_and_responder_flows() -> None:
    flows = named("198.18.0.11")
    assert {described(flow) for flow in flows} == {
        (Purpose.PORT_SECURITY, owner("ip:198.18.0.11")), (Purpose.OWNER_PASS, owner("ip:198.18.0.11")),
        (Purpose.ARP_RESPONDER, owner("ip:198.18.0.11"))}
    answers = [flow for flow in flows if flow.actions]
    assert [described(flow)[0] for flow in answers] == [Purpose.ARP_RESPONDER]


def test_an_ipv6_placement_owns_its_address_flows_and_its_link_local_ones() -> None:
    purposes = {described(flow) for flow in named("fd00::11")}
    assert {p for p, _ in purposes} == {Purpose.PORT_SECURITY, Purpose.OWNER_PASS, Purpose.ND_RESPONDER}
    assert {o for _, o in purposes} == {owner("ip:fd00::11")}
    assert {described(flow) for flow in named(link_local("fd00::11"))} == {
        (Purpose.PORT_SECURITY, owner(f"ip:{link_local('fd00::11')}"))}


def test_flows_naming_only_a_mac_are_owned_by_the_mac() -> None:
    forward = [flow for flow in FLOWS if flow.table == "l2" and flow.match == (("eth_dst", N1),)]
    assert [described(flow) for flow in forward] == [(Purpose.FORWARD, owner(f"mac:{N1}"))]
    guards = {described(flow) for flow in FLOWS if flow.table == "ingress" and flow.priority == 205
              and ("eth_src", P1) in flow.match}
    assert guards == {(Purpose.RA_GUARD, owner(f"mac:{P1}"))}


def test_fixed_flows_name_their_port_or_learn_mac_or_the_pipeline() -> None:
    trusted = [flow for flow in FLOWS if ("in_port", PORT_ROUTER) in flow.match and flow.table == "ingress"]
    assert {described(flow) for flow in trusted} == {(Purpose.TRUSTED, owner(f"port:{PORT_ROUTER}"))}
    (learn,) = [flow for flow in FLOWS if ("eth_src", LEARN) in flow.match]
    assert described(learn) == (Purpose.LEARN, owner(f"mac:{LEARN}"))
    misses = [flow for flow in FLOWS if flow.priority == 0 or flow.table == "nd_reply"]
    assert misses and {described(flow) for flow in misses} == {(Purpose.PIPELINE, 0)}


def test_ipvlan_placements_sharing_a_mac_and_a_link_local_share_its_flows() -> None:
    """Two ipvlan pods of n1 in different IPv6 prefixes with the same interface id: one link-local."""
    first = Placement("fd00::5", N1, PORT_N1, "a/x")
    state = two_node_state(placements=(first, Placement("fd01::5", N1, PORT_N1, "b/y")))
    flows = desired_flows(state)
    assert len({flow.key for flow in flows}) == len(flows)
    alone = desired_flows(replace(state, placements=(first,)))
    shared = [flow for flow in alone if flow.table == "ingress" and ("eth_src", N1) in flow.match
              and not any(v == "fd00::5" for _, v in flow.match)]
    assert shared and set(shared) <= flows  # the same flows, cookies and all, whoever else is there


@given(states)
def test_no_key_twice_and_the_same_cookie_after_a_restart(state: SwitchState) -> None:
    flows = desired_flows(state)
    assert len({flow.key for flow in flows}) == len(flows)
    tracker = DesiredFlows()
    tracker.update(state)
    assert tracker.flows == flows
