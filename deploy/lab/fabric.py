"""The lab's fabric on the rig (I/O): the bridges of a `topology.Fabric` in the lab's one private
ovs-vswitchd, each with its pinned dpid, the veth cables between them, cutting and restoring a
cable, and what a switch shows (carrier of its cables, port and responder-flow counters).

Why several bridges in one ovs-vswitchd rather than one ovs-vswitchd per switch: every bridge is
its own OpenFlow switch to the controller (its own connection, datapath id, flow tables and ports),
which is all a fabric needs, while one vswitchd per switch would mean five ovsdb-servers and five
userspace datapaths polling on a shared 2-core machine, and five more daemons to start, stop and
sweep. What one vswitchd could blur is kept apart: dpids are pinned and distinct, and bridges are
joined only by veth pairs (not patch ports, which OVS shortcuts inside the datapath), so
`underlay-lab link down` is a real carrier loss that OVS sees on both ends and reports to the
controller as a port status, exactly as a pulled cable between two switches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deploy.lab import netns
from deploy.lab.ovs import PrivateOvs
from deploy.lab.rig import Rig
from deploy.lab.topology import Cable, Fabric


def build(rig: Rig, fabric: Fabric, *, prefix: str, controller: str) -> dict[str, str]:
    """Every switch of `fabric` as a bridge (fail_mode=secure, its pinned dpid, `controller` its
    controller), every cable as a veth pair on the ports the shape numbered; the rig's own port
    numbers (hosts') then start above them. Returns each switch's bridge by switch name."""
    bridges = {}
    for switch in fabric.switches:
        bridges[switch.name] = switch.bridge(prefix, single=fabric.single)
        rig.ovs.add_bridge(bridges[switch.name], switch.dpid, controller=controller)
    for cable in fabric.cables:
        a, b = cable.veth_names(prefix)
        netns.add_veth(ns_a=rig.mgmt_ns, name_a=a, ns_b=rig.mgmt_ns, name_b=b)
        rig.ovs.add_port(bridges[cable.a.switch], a, cable.a.port)
        rig.ovs.add_port(bridges[cable.b.switch], b, cable.b.port)
    rig.skip_ofports(fabric.first_host_port)
    return bridges


def set_link(rig: Rig, fabric: Fabric, one: str, other: str, *, prefix: str, up: bool) -> Cable:
    """Cut (`up=False`) or restore the cable between switches `one` and `other`: both veth ends
    down or up, so each bridge sees its port's carrier go."""
    cable = fabric.cable(one, other)
    for veth in cable.veth_names(prefix):
        netns.set_link_up(rig.mgmt_ns, veth, up=up)
    return cable


def link_state(rig: Rig, cable: Cable, *, prefix: str) -> str:
    """"up" when both veth ends are operationally up, else "down"."""
    up = all(netns.operstate(rig.mgmt_ns, veth) == "UP" for veth in cable.veth_names(prefix))
    return "up" if up else "down"


def describe(rig: Rig, fabric: Fabric, *, prefix: str, switch_of: Mapping[str, str]) -> dict[str, Any]:
    """The lab's own view of its fabric for `status`: switches (bridge, dpid, the nodes and external
    host on each) and cables with their carrier state. `switch_of` maps node names (and "external")
    to switch names."""
    return {
        "topology": fabric.spec,
        "switches": [{"name": s.name, "dpid": f"{s.dpid:#x}", "bridge": fabric.bridge(s.name, prefix),
                      "hosts": sorted(host for host, where in switch_of.items() if where == s.name)}
                     for s in fabric.switches],
        "links": [{"a": str(c.a), "b": str(c.b), "state": link_state(rig, c, prefix=prefix),
                   "veths": list(c.veth_names(prefix))} for c in fabric.cables],
    }


def packet_ins(stats: Mapping[str, int]) -> int:
    """The controller's packet-ins (`GET /v1/health` stats) but its own LLDP frames coming back
    from link ports, which a fabric's controller receives every second on every link port."""
    return stats.get("packet_ins", 0) - stats.get("lldp_packet_ins", 0)


def punted(ovs: PrivateOvs, bridge: str) -> int:
    """Packets `bridge`'s flows sent to the controller, but LLDP: counted by the switch itself."""
    dump = ovs.ofctl("dump-flows", bridge)
    return sum(int(m) for line in dump.splitlines() if "CONTROLLER" in line and "0x88cc" not in line
               for m in re.findall(r"n_packets=(\d+)", line))


def responder_packets(ovs: PrivateOvs, bridge: str, ip: str) -> int:
    """Packets the ARP responder flow for `ip` on `bridge` answered (turned back out IN_PORT)."""
    dump = ovs.ofctl("dump-flows", bridge, f"arp,arp_tpa={ip}")
    return sum(int(m) for line in dump.splitlines() if "IN_PORT" in line
               for m in re.findall(r"n_packets=(\d+)", line))


def port_counters(ovs: PrivateOvs, bridge: str) -> dict[int, tuple[int, int]]:
    """(rx, tx) packets of every numbered port of `bridge` (`ovs-ofctl dump-ports`)."""
    return parse_port_counters(ovs.ofctl("dump-ports", bridge))


def parse_port_counters(text: str) -> dict[int, tuple[int, int]]:
    """`ovs-ofctl dump-ports` text → {port: (rx packets, tx packets)}; LOCAL left out."""
    found = re.findall(r"port\s+(\d+): rx pkts=(\d+).*?tx pkts=(\d+)", text, flags=re.S)
    return {int(port): (int(rx), int(tx)) for port, rx, tx in found}
