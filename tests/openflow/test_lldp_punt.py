"""The flows that bring LLDP frames from link ports to the controller."""

from __future__ import annotations

from openflow import cookies
from openflow.cookies import Purpose
from openflow.lldp import ETH_TYPE_LLDP, PRIO_LLDP, is_topology, punt_flows
from openflow.tables import INGRESS


def test_punt_flows_one_per_link_port_above_everything() -> None:
    flows = punt_flows([12, 11, 12], 0x55AA_0000_0000_0000)
    assert [dict(f.match)["in_port"] for f in flows] == [11, 12]
    for flow in flows:
        assert flow.table == INGRESS and flow.priority == PRIO_LLDP and dict(flow.match)["eth_type"] == ETH_TYPE_LLDP
        assert str(flow.actions[0]).startswith("CONTROLLER")
        assert is_topology(flow.cookie) and cookies.is_ours(flow.cookie, 0x55AA_0000_0000_0000)
    assert flows[0].cookie == cookies.make(0x55AA_0000_0000_0000, Purpose.TOPOLOGY, "port:11")
    assert not is_topology(cookies.make(0x55AA_0000_0000_0000, Purpose.LEARN))
