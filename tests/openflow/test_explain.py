"""openflow.explain: ovs-ofctl dump-flows text back into table names, purposes and owners.

The lines below are what ovs-ofctl 3.1 prints (copied from the rig): with numbers (not a terminal),
with names (`--names`, or a terminal, when the bridge's Flow_Table rows are named), `--no-stats`
(which leaves out `table=0` and `cookie=0x0`). test_ovs_explain.py reads a real switch's dump.
"""

from __future__ import annotations

from ofstates import COOKIE, N1, PORT_ROUTER, dual_stack_state

from openflow import cookies
from openflow.cookies import Purpose
from openflow.explain import Explained, explain, explain_flow, explain_line, owner_map
from openflow.model import link_local
from openflow.pipeline import desired_flows

TAG = 0x55AA_0000_0000_0000
RESPONDER = cookies.make(TAG, Purpose.ARP_RESPONDER, cookies.ip_owner("198.18.0.11"))
FORWARD = cookies.make(TAG, Purpose.FORWARD, cookies.mac_owner(N1))
OWNERS = owner_map(dual_stack_state().placements, ports={PORT_ROUTER: "uplink"})

NUMBERS = f"""OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie={RESPONDER:#x}, duration=0.046s, table=1, n_packets=3, n_bytes=126, priority=100,arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.11,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],IN_PORT
 cookie={FORWARD:#x}, duration=0.006s, table=2, n_packets=0, n_bytes=0, priority=100,dl_dst={N1} actions=output:1
 cookie={TAG:#x}, duration=0.026s, table=4, n_packets=0, n_bytes=0, priority=100,icmp6,icmp_type=136 actions=IN_PORT
 cookie=0x0, duration=0.006s, table=7, n_packets=0, n_bytes=0, priority=5,ip actions=learn(table=3,hard_timeout=300,cookie=0xaa55,NXM_OF_ETH_SRC[]),goto_table:3
"""
NAMES = f""" cookie={RESPONDER:#x}, duration=0.063s, table=responder, n_packets=3, n_bytes=126, priority=100,arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.11,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],IN_PORT
 cookie={FORWARD:#x}, duration=0.023s, table=l2, n_packets=0, n_bytes=0, priority=100,dl_dst={N1} actions=output:1
 cookie={TAG:#x}, duration=0.043s, table="nd_reply", n_packets=0, n_bytes=0, priority=100,icmp6,icmp_type=136 actions=IN_PORT
 cookie=0x0, duration=0.023s, table=7, n_packets=0, n_bytes=0, priority=5,ip actions=learn(table=seen,hard_timeout=300,cookie=0xaa55,NXM_OF_ETH_SRC[]),goto_table:seen
"""


def test_numbers_and_names_read_the_same() -> None:
    by_numbers, by_names = explain(NUMBERS, owners=OWNERS), explain(NAMES, owners=OWNERS)
    assert [e.table for e in by_numbers] == ["responder", "l2", "nd_reply", "table7"]
    assert by_numbers == by_names


def test_purpose_and_owner_come_from_the_cookie() -> None:
    responder, forward, reply, foreign = explain(NUMBERS, owners=OWNERS, tag=TAG)
    assert (responder.priority, responder.match) == (100, "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.11,arp_op=1")
    assert responder.describe() == "arp_responder for default/mac-1"
    assert forward.describe() == "forward for node/n1"  # the node's MAC, shared by its ipvlan pods
    assert reply.describe() == "pipeline" and reply.ours
    assert (foreign.ours, foreign.describe()) == (False, "pipeline")
    assert foreign.actions == "learn(table=seen,hard_timeout=300,cookie=0xaa55,NXM_OF_ETH_SRC[]),goto_table:seen"


def test_no_stats_lines_without_table_or_cookie() -> None:
    (drop,) = explain(" priority=0 actions=drop")
    assert drop == Explained("ingress", 0, "", "drop", 0, "pipeline", "")
    (anything,) = explain(" cookie=0x5, reset_counts actions=goto_table:1")
    assert (anything.table, anything.priority, anything.match, anything.actions) == ("ingress", 32768, "",
                                                                                     "goto_table:responder")


def test_unknown_owner_and_purpose_are_shown_not_lost() -> None:
    line = f" cookie={TAG | 0xFE << 40 | 0xABCD:#x}, table=2, priority=7,dl_dst=02:00:00:00:00:99 actions=drop"
    flow = explain_line(line, owners=OWNERS)
    assert flow is not None and flow.describe() == "purpose254 for 0x0000abcd"
    assert "# purpose254 for 0x0000abcd" in flow.render()


def test_header_and_blank_lines_are_not_flows() -> None:
    assert explain("OFPST_FLOW reply (OF1.3) (xid=0x2):\n\n") == []
    assert explain_line("NXST_FLOW reply (xid=0x4): flags=[more] actions=x") is None


def test_owner_map_names_ips_link_locals_macs_ports_and_extra_keys() -> None:
    owners = owner_map(dual_stack_state().placements, ports={PORT_ROUTER: "uplink"},
                       names=[(cookies.mac_owner("02:00:00:00:00:03"), "node/n3")])
    assert owners[cookies.owner_id(cookies.ip_owner("fd00::21"))] == "default/ipv-1"
    assert owners[cookies.owner_id(cookies.ip_owner(link_local("fd00::21")))] == "default/ipv-1"
    assert owners[cookies.owner_id(cookies.mac_owner(N1))] == "node/n1"
    assert owners[cookies.owner_id(cookies.port_owner(PORT_ROUTER))] == "uplink"
    assert owners[cookies.owner_id(cookies.mac_owner("02:00:00:00:00:03"))] == "node/n3"


def test_a_flow_value_explains_like_its_dump_line() -> None:
    flows = desired_flows(dual_stack_state())
    (answer,) = [explain_flow(f, owners=OWNERS, tag=COOKIE) for f in flows
                 if f.table == "responder" and f.actions and ("arp_tpa", "198.18.0.11") in f.match]
    assert (answer.table, answer.priority, answer.describe(), answer.ours) == (
        "responder", 100, "arp_responder for default/mac-1", True)
    assert answer.match == "eth_dst=ff:ff:ff:ff:ff:ff,eth_type=0x0806,arp_op=1,arp_tpa=198.18.0.11"
    assert answer.actions.endswith("IN_PORT")
