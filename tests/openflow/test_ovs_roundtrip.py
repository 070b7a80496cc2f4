"""Real Open vSwitch: what we send is what its OFPFlowStatsReply gives back, and reconciling is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ofpeer import connected
from ofstates import COOKIE, P1, PORT_N2, two_node_state

from openflow.diff import diff
from openflow.model import Placement, UnknownDestination
from openflow.ofmsg import parse_flow_stats
from openflow.pipeline import desired_flows

pytestmark = pytest.mark.rig

FOREIGN = "cookie=0x99,table=0,priority=5,arp,actions=drop"


def test_pushed_flows_read_back_exactly_and_reconcile_to_nothing(rig, bridge) -> None:
    rig.ovs.ofctl("add-flow", bridge, FOREIGN)  # someone else's flow: never dumped, never touched
    desired = desired_flows(two_node_state())
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
