"""The lab's fabric on a real rig, no controller (deploy/lab/fabric.py): leaf-spine's five bridges in
one private ovs-vswitchd with their pinned dpids, cables that are veth pairs on the numbered ports,
frames crossing them, and a cut that OVS sees as a carrier loss on both ends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deploy.lab import fabric as labfabric
from deploy.lab import netns, topology
from deploy.lab.rig import Host, MissingPrerequisite, Rig

pytestmark = pytest.mark.rig


@dataclass
class Built:
    rig: Rig
    fabric: topology.Fabric
    bridges: dict[str, str]
    a: Host  # on leaf1
    b: Host  # on leaf2


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """A rig of its own (not the session's): the fabric pins dpids 0x1, 0x2 and 0x11-0x13, which the
    session rig's numbered bridges would also take."""
    try:
        rig = Rig().start()
    except MissingPrerequisite as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        fabric = topology.parse("leaf-spine")
        bridges = labfabric.build(rig, fabric, prefix=rig.prefix, controller="tcp:127.0.0.1:1")
        a = rig.add_host("a", bridges["leaf1"], cidr="198.18.0.21/24")
        b = rig.add_host("b", bridges["leaf2"], cidr="198.18.0.22/24")
        yield Built(rig, fabric, bridges, a, b)
    finally:
        rig.stop()


def test_switches_are_bridges_with_their_pinned_dpids(built):
    for switch in built.fabric.switches:
        shown = built.rig.ovs.ofctl("show", built.bridges[switch.name])
        assert f"dpid:{switch.dpid:016x}" in shown, shown


def test_cables_are_veth_pairs_on_the_numbered_ports(built):
    for cable in built.fabric.cables:
        for end, veth in zip((cable.a, cable.b), cable.veth_names(built.rig.prefix)):
            assert built.rig.ovs.vsctl("get", "interface", veth, "ofport").strip() == str(end.port)
            assert built.rig.ovs.vsctl("port-to-br", veth).strip() == built.bridges[end.switch]
            kind = netns.run(built.rig.mgmt_ns, ["ip", "-d", "-j", "link", "show", veth]).stdout
            assert '"info_kind":"veth"' in kind
    assert built.a.ofport >= built.fabric.first_host_port and built.b.ofport > built.a.ofport


def cross_spine1(built: Built) -> None:
    """Flows by hand: a (leaf1) and b (leaf2) talk through spine1 only."""
    leaf1, leaf2 = built.fabric.cable("leaf1", "spine1"), built.fabric.cable("leaf2", "spine1")
    ofctl = built.rig.ovs.ofctl
    ofctl("add-flow", built.bridges["leaf1"], f"in_port={built.a.ofport},actions=output:{leaf1.a.port}")
    ofctl("add-flow", built.bridges["leaf1"], f"in_port={leaf1.a.port},actions=output:{built.a.ofport}")
    ofctl("add-flow", built.bridges["spine1"], f"in_port={leaf1.b.port},actions=output:{leaf2.b.port}")
    ofctl("add-flow", built.bridges["spine1"], f"in_port={leaf2.b.port},actions=output:{leaf1.b.port}")
    ofctl("add-flow", built.bridges["leaf2"], f"in_port={built.b.ofport},actions=output:{leaf2.a.port}")
    ofctl("add-flow", built.bridges["leaf2"], f"in_port={leaf2.a.port},actions=output:{built.b.ofport}")


def link_states(built: Built, cable: topology.Cable) -> list[str]:
    return [built.rig.ovs.vsctl("get", "interface", veth, "link_state").strip()
            for veth in cable.veth_names(built.rig.prefix)]


def test_frames_cross_the_cables_and_a_cut_is_a_carrier_loss_on_both_ends(built):
    cross_spine1(built)
    assert built.a.ping("198.18.0.22", count=2)

    cable = labfabric.set_link(built.rig, built.fabric, "spine1", "leaf2", prefix=built.rig.prefix, up=False)
    try:
        assert labfabric.link_state(built.rig, cable, prefix=built.rig.prefix) == "down"
        assert link_states(built, cable) == ["down", "down"]
        assert not built.a.ping("198.18.0.22", timeout=1)
    finally:
        labfabric.set_link(built.rig, built.fabric, "leaf2", "spine1", prefix=built.rig.prefix, up=True)

    assert labfabric.link_state(built.rig, cable, prefix=built.rig.prefix) == "up"
    assert built.a.ping("198.18.0.22", count=2)
    counters = labfabric.port_counters(built.rig.ovs, built.bridges["spine1"])
    assert counters[cable.b.port][1] >= 2, counters  # spine1 sent the pings on to leaf2


def test_parse_port_counters():
    text = """OFPST_PORT reply (OF1.3) (xid=0x2): 2 ports
  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=0, errs=0, coll=0
  port  2: rx pkts=7, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=11, bytes=0, drop=0, errs=0, coll=0
           duration=3.1s
"""
    assert labfabric.parse_port_counters(text) == {2: (7, 11)}
