"""Real Open vSwitch: what we send is what its OFPFlowStatsReply gives back, and reconciling is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ofpeer import connected
from ofstates import COOKIE, P1, PORT_N2, dual_stack_state, two_node_state

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from openflow.diff import diff
from openflow.flows import Flow, make_flow
from openflow.model import Placement, UnknownDestination
from openflow.ofmsg import bundle_transaction, flow_mod_bytes, parse_flow_stats
from openflow.pipeline import desired_flows

pytestmark = pytest.mark.rig

FOREIGN = "cookie=0x99,table=0,priority=5,arp,actions=drop"


def test_pushed_flows_read_back_exactly_and_reconcile_to_nothing(rig, bridge) -> None:
    rig.ovs.ofctl("add-flow", bridge, FOREIGN)  # someone else's flow: never dumped, never touched
    in_a_vlan = Placement("198.18.0.13", "02:00:c6:12:01:13", PORT_N2, "default/vlan-100", vlan=100)
    six_in_a_vlan = Placement("fd00::13", "02:00:c6:12:01:13", PORT_N2, "default/vlan-100", vlan=100)
    # every field and action of both families: ND answers, IPv6 port security, the RA guard
    placements = (*dual_stack_state().placements, in_a_vlan, six_in_a_vlan)
    desired = desired_flows(dual_stack_state(placements=placements))
    with connected(rig, bridge) as switch:
        switch.flow_mods(diff((), desired)[1])
        current = parse_flow_stats(switch.flow_stats(COOKIE))

        assert current == desired
        assert diff(current, desired) == ((), ())
    assert "cookie=0x99" in rig.ovs.ofctl("dump-flows", bridge)


@pytest.mark.parametrize("change", [
    pytest.param(lambda s: replace(s, placements=tuple(
        replace(p, port=PORT_N2) if p.mac == P1 else p for p in s.placements)), id="move-macvlan-pod"),
    pytest.param(lambda s: replace(s, placements=(*s.placements[:-1], Placement("198.18.0.31", "02:00:c6:12:01:31", 2))),
                 id="replace-pod"),
    pytest.param(lambda s: replace(s, unknown_destination=UnknownDestination.DROP, learn_macs=()), id="policy"),
])
def test_diff_applied_to_the_switch_gives_the_new_state(rig, bridge, change) -> None:
    before = two_node_state()
    after = change(before)
    with connected(rig, bridge) as switch:
        switch.flow_mods(diff((), desired_flows(before))[1])
        to_delete, to_add = diff(parse_flow_stats(switch.flow_stats(COOKIE)), desired_flows(after))
        assert to_delete or to_add
        switch.flow_mods(to_delete, delete=True)
        switch.flow_mods(to_add)

        assert parse_flow_stats(switch.flow_stats(COOKIE)) == desired_flows(after)


def bundle_replies(switch, blob: bytes, barrier_xid: int) -> list:  # noqa: ANN001
    """Send a pre-encoded bundle transaction; every reply up to its barrier's."""
    switch.sock.sendall(blob)
    replies = []
    while True:
        reply = switch.receive()
        replies.append(reply)
        if reply.xid == barrier_xid and isinstance(reply, parser.OFPBarrierReply):
            return replies


def test_a_bundle_transaction_is_acknowledged_by_its_barrier_and_a_refused_mod_names_itself(rig, bridge) -> None:
    """What controller/switch.py relies on: one buffer (open, adds, commit, barrier) is applied at
    commit and acknowledged by the barrier. A flow-mod the switch refuses when it is added is left
    out of the bundle and reported with its bundle-add's xid; the rest still commits (so the
    session, seeing the error, fails the convergence and re-reads the switch's flows)."""
    flows = sorted(desired_flows(two_node_state()), key=Flow.pipeline_order)
    mods = [flow_mod_bytes(flow) for flow in flows]
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    with connected(rig, bridge) as switch:
        blob = bundle_transaction(mods, bundle_id=1, flags=flags, first_xid=1000)
        replies = bundle_replies(switch, blob, barrier_xid=1000 + len(mods) + 2)
        assert [type(r).__name__ for r in replies] == ["ONFBundleCtrlMsg", "ONFBundleCtrlMsg", "OFPBarrierReply"]
        assert [(r.xid, r.type) for r in replies[:2]] == [(1000, ofp.ONF_BCT_OPEN_REPLY),
                                                          (1000 + len(mods) + 1, ofp.ONF_BCT_COMMIT_REPLY)]
        assert parse_flow_stats(switch.flow_stats(COOKIE)) == frozenset(flows)

        backwards = make_flow("l2", 7, {"eth_dst": "02:00:00:00:00:77"}, goto="ingress", cookie=COOKIE)
        mods = [flow_mod_bytes(flows[0], delete=True), flow_mod_bytes(backwards)]
        replies = bundle_replies(switch, bundle_transaction(mods, bundle_id=2, flags=flags, first_xid=2000),
                                 barrier_xid=2000 + len(mods) + 2)
        assert [r.xid for r in replies if isinstance(r, parser.OFPErrorMsg)] == [2002]  # the second mod's
        assert parse_flow_stats(switch.flow_stats(COOKIE)) == frozenset(flows[1:])
