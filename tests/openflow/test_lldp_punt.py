"""The flows that bring LLDP frames from link ports to the controller."""

from __future__ import annotations

from openflow import cookies
from openflow.cookies import Purpose
from openflow.lldp import ETH_TYPE_LLDP, PRIO_LLDP, is_topology, punt_flows
from openflow.tables import INGRESS


def test_punt_flows_one_per_link_port_above_everything() -> None:
    *flows, drop = punt_flows([12, 11, 12], 0x55AA_0000_0000_0000)
    assert [dict(f.match)["in_port"] for f in flows] == [11, 12] and {f.priority for f in flows} == {PRIO_LLDP}
    assert (drop.match, drop.actions, drop.priority) == ((("eth_type", ETH_TYPE_LLDP),), (), PRIO_LLDP - 1)
    assert punt_flows([], 0x55AA_0000_0000_0000) == ()  # a lone switch: no LLDP flows at all
    for flow in [*flows, drop]:
        assert flow.table == INGRESS and dict(flow.match)["eth_type"] == ETH_TYPE_LLDP
        assert is_topology(flow.cookie) and cookies.is_ours(flow.cookie, 0x55AA_0000_0000_0000)
    assert all(str(flow.actions[0]).startswith("CONTROLLER") for flow in flows)
    assert flows[0].cookie == cookies.make(0x55AA_0000_0000_0000, Purpose.TOPOLOGY, "port:11")
    assert not is_topology(cookies.make(0x55AA_0000_0000_0000, Purpose.LEARN))
