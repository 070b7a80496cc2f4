"""Real Open vSwitch, real hosts: the installed flows alone answer ARP, forward and drop spoofs.

The flows are pushed over the bridge's management socket; no controller is ever connected and the
bridge is fail_mode=secure, so everything seen here is the datapath's own doing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from ofpeer import Peer, connected
from os_ken.ofproto import ofproto_v1_3_parser as parser
from ofstates import COOKIE

from deploy.lab.rig import Host, Rig
from openflow.diff import diff
from openflow.flows import Flow
from openflow.model import Placement, PortRole, SwitchPort, SwitchState
from openflow.ofmsg import parse_flow_stats, parse_seen_ports, seen_request
from openflow.pipeline import desired_flows
from openflow.tables import render

pytestmark = pytest.mark.rig

POD_MAC = "02:00:c6:12:02:11"
N1_IP, N2_IP = "198.18.2.1", "198.18.2.2"


def lab_state(n1: Host, n2: Host) -> SwitchState:
    """n1 with a macvlan pod (.11, own MAC) and an ipvlan pod (.21, n1's MAC); n2 with one of each."""
    return SwitchState(
        dpid=1, cookie=COOKIE,
        ports=(SwitchPort(n1.ofport, PortRole.NODE), SwitchPort(n2.ofport, PortRole.NODE)),
        placements=(
            Placement(N1_IP, n1.mac, n1.ofport, "node/n1"),
            Placement(N2_IP, n2.mac, n2.ofport, "node/n2"),
            Placement("198.18.2.11", POD_MAC, n1.ofport, "default/mac-1"),
            Placement("198.18.2.21", n1.mac, n1.ofport, "default/ipv-1"),
            Placement("198.18.2.12", "02:00:c6:12:02:12", n2.ofport, "default/mac-2"),
            Placement("198.18.2.22", n2.mac, n2.ofport, "default/ipv-2"),
        ),
    )


@dataclass
class Lab:
    n1: Host
    n2: Host
    switch: Peer
    flows: frozenset[Flow]
    rig: Rig
    bridge: str

    def packets(self, table: str, priority: int, **fields: object) -> int:
        """The switch's packet counter of the one desired flow in `table` at `priority` with `fields`.

        The userspace datapath credits its cached flows to rules in the background: wait for a pass.
        """
        (flow,) = [f for f in self.flows if f.table == table and f.priority == priority
                   and all((name, value) in f.match for name, value in fields.items())]
        self.appctl("revalidator/wait")
        (count,) = [e.packet_count for e in self.switch.flow_stats(COOKIE) if parse_flow_stats([e]) == {flow}]
        return int(count)

    def trace(self, flow: str) -> str:
        return self.appctl("ofproto/trace", self.bridge, flow)

    def appctl(self, *args: str) -> str:
        return self.rig.ovs.appctl(*args)


@pytest.fixture
def lab(rig, bridge, make_host) -> Iterator[Lab]:
    n1 = make_host("n1", cidr=f"{N1_IP}/24")
    n2 = make_host("n2", cidr=f"{N2_IP}/24")
    flows = desired_flows(lab_state(n1, n2))
    with connected(rig, bridge) as switch:
        switch.flow_mods(diff((), flows)[1])
        assert rig.ovs.vsctl("get-controller", bridge).strip() == ""
        yield Lab(n1, n2, switch, flows, rig, bridge)


def arping(host: Host, target: str, *extra: str) -> tuple[int, list[str]]:
    """Exit code and the MACs of the replies (upper-case in arping's output)."""
    proc = host.run("arping", "-c", "1", "-w", "2", "-I", host.ifname, *extra, target, check=False)
    return proc.returncode, [mac.lower() for mac in re.findall(r"reply from \S+ \[([0-9A-Fa-f:]+)\]", proc.stdout)]


def test_switch_answers_arp_with_the_placed_mac(lab: Lab) -> None:
    assert arping(lab.n2, "198.18.2.11") == (0, [POD_MAC])
    assert arping(lab.n2, "198.18.2.21") == (0, [lab.n1.mac])  # ipvlan: the node's MAC
    assert arping(lab.n1, "198.18.2.22") == (0, [lab.n2.mac])
    assert lab.packets("responder", 100, arp_tpa="198.18.2.11") == 1
    assert lab.packets("l2", 50) == 0  # answered requests are not flooded


def test_duplicate_address_detection_from_owner_gets_no_answer(lab: Lab) -> None:
    assert arping(lab.n1, "198.18.2.21", "-D") == (0, [])  # arping -D: 0 = no one answered
    assert lab.packets("responder", 200, arp_tpa="198.18.2.21", in_port=lab.n1.ofport) == 1
    assert lab.packets("l2", 50) == 1  # the probe passed on: flooded


def test_unicast_arp_is_forwarded_not_answered(lab: Lab) -> None:
    trace = lab.trace(f"in_port={lab.n2.ofport},arp,dl_src={lab.n2.mac},dl_dst={lab.n1.mac},arp_op=1,"
                      f"arp_spa={N2_IP},arp_sha={lab.n2.mac},arp_tpa={N1_IP}")
    assert trace.rstrip().endswith(f"Datapath actions: {_datapath_port(lab, lab.n1)}"), trace


def test_nodes_reach_each_other_through_exact_flows(lab: Lab) -> None:
    assert lab.n2.ping(N1_IP, count=2, timeout=1)
    assert lab.packets("l2", 100, eth_dst=lab.n1.mac) == 2
    assert lab.packets("l2", 100, eth_dst=lab.n2.mac) == 2
    assert lab.packets("l2", 0) == 0


def test_spoofed_source_ip_is_dropped(lab: Lab) -> None:
    n1, n2 = lab.n1, lab.n2
    n2.run("ip", "addr", "add", "198.18.2.99/32", "dev", n2.ifname)
    n2.run("ip", "neigh", "replace", N1_IP, "lladdr", n1.mac, "dev", n2.ifname, "nud", "permanent")
    before = lab.packets("ingress", 0)
    proc = n2.run("ping", "-n", "-c", "1", "-W", "1", "-I", "198.18.2.99", N1_IP, check=False)
    assert proc.returncode != 0
    assert lab.packets("ingress", 0) == before + 1


def test_a_tagged_frame_with_the_right_addresses_is_dropped(lab: Lab) -> None:
    n1 = lab.n1
    frame = f"in_port={n1.ofport},dl_src={n1.mac},dl_dst={lab.n2.mac},ip,nw_src={N1_IP},nw_dst={N2_IP}"
    honest = lab.trace(frame)
    assert honest.rstrip().endswith(f"Datapath actions: {_datapath_port(lab, lab.n2)}"), honest
    for tag in ("dl_vlan=100", "vlan_tci=0x1000"):  # 802.1Q, a priority tag (QinQ: tests/security)
        tagged = lab.trace(f"{frame},{tag}")
        assert tagged.rstrip().endswith("Datapath actions: drop"), tagged


def test_spoofed_arp_sender_is_dropped_and_honest_one_answered(lab: Lab) -> None:
    n1, n2 = lab.n1, lab.n2
    request = f"in_port={n2.ofport},arp,dl_src={n2.mac},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_sha={n2.mac}"
    spoofed = lab.trace(f"{request},arp_spa=198.18.2.11,arp_tpa={N1_IP}")
    assert spoofed.rstrip().endswith("Datapath actions: drop"), spoofed
    honest = lab.trace(f"{request},arp_spa={N2_IP},arp_tpa=198.18.2.11")
    assert f"set(eth(src={POD_MAC},dst={n2.mac}))" in honest, honest


def test_dump_of_two_nodes_four_pods(lab: Lab) -> None:
    """The flows as Open vSwitch shows them (`pytest -s` prints them, and our rendering)."""
    dump = lab.rig.ovs.ofctl("dump-flows", lab.bridge, "--no-stats")
    print(dump)
    print("\n".join(render(flow) for flow in sorted(lab.flows, key=Flow.sort_key)))
    assert len(dump.strip().splitlines()) == len(lab.flows)


def _datapath_port(lab: Lab, host: Host) -> str:
    """The userspace datapath's port number of `host`'s cable (ofproto/trace prints those)."""
    for line in lab.appctl("dpif/show").splitlines():
        if line.strip().startswith(f"{host.switch_ifname} "):
            return line.split("/")[-1].split(":")[0].strip()
    raise AssertionError(f"{host.switch_ifname} not in dpif/show")


def test_the_switch_records_what_trusted_ports_send_and_reconciling_leaves_it(rig, bridge, make_host) -> None:
    """The `seen` table as the controller reads it: sources (and ARP senders) of the trusted port,
    learned by Open vSwitch itself, under their own cookie; nothing from a node port."""
    node = make_host("n1", cidr="198.18.3.1/24")
    router = make_host("router", cidr="198.18.3.254/24")
    node.enable_ipv6("fd00:3::1/64")
    router.enable_ipv6("fd00:3::fe/64")
    state = SwitchState(dpid=1, cookie=COOKIE, ports=(SwitchPort(node.ofport, PortRole.NODE),
                                                      SwitchPort(router.ofport, PortRole.TRUSTED)),
                        placements=(Placement("198.18.3.1", node.mac, node.ofport, "node/n1"),
                                    Placement("fd00:3::1", node.mac, node.ofport, "node/n1")))
    flows = desired_flows(state)
    with connected(rig, bridge) as switch:
        switch.flow_mods(diff((), flows)[1])
        assert router.ping("198.18.3.1")
        assert router.ping("fd00:3::1")  # its NS is answered by the switch; n1 answers the echo

        def seen(**what: str) -> tuple[int, ...]:
            replies = switch.request(seen_request(switch.datapath, COOKIE, **what), parser.OFPFlowStatsReply)
            return parse_seen_ports(entry for reply in replies for entry in reply.body)

        assert seen(mac=router.mac) == (router.ofport,)
        assert seen(ip="198.18.3.254") == (router.ofport,)  # the router's ARP request for n1
        assert seen(ip="fd00:3::fe") == (router.ofport,)  # its Neighbor Solicitation for n1
        assert seen(mac=node.mac) == () and seen(ip="198.18.3.1") == ()  # n1 answered from a node port
        assert seen(ip="fd00:3::1") == ()
        assert parse_flow_stats(switch.flow_stats(COOKIE)) == flows  # the records are not ours to reconcile
