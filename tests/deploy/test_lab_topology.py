"""The lab's fabric shapes (deploy/lab/topology.py), without root: names, dpids, ports, cables,
where nodes and the external host go, and the controller's [[links]] they become."""

from __future__ import annotations

import pytest

from deploy.lab import topology
from deploy.lab.topology import End, TopologyError


def ports_of(fabric: topology.Fabric) -> dict[str, list[int]]:
    ports: dict[str, list[int]] = {}
    for cable in fabric.cables:
        for end in (cable.a, cable.b):
            ports.setdefault(end.switch, []).append(end.port)
    return ports


def test_single_is_todays_switch():
    fabric = topology.parse("single")

    assert fabric.single and fabric.cables == () and fabric.config_links() == []
    assert [(s.name, s.dpid) for s in fabric.switches] == [("sw", 1)]
    assert fabric.bridge("sw", "ul1a2b") == "ul1a2b-sw"
    assert [fabric.node_switch(i, nodes=3) for i in (1, 2, 3)] == ["sw"] * 3
    assert fabric.first_host_port == 1


def test_leaf_spine_cables_every_leaf_to_every_spine():
    fabric = topology.parse("leaf-spine")

    assert [(s.name, s.dpid) for s in fabric.switches] == [
        ("spine1", 0x1), ("spine2", 0x2), ("leaf1", 0x11), ("leaf2", 0x12), ("leaf3", 0x13)]
    assert {frozenset((c.a.switch, c.b.switch)) for c in fabric.cables} == {
        frozenset((leaf, spine)) for leaf in ("leaf1", "leaf2", "leaf3") for spine in ("spine1", "spine2")}
    assert fabric.cable("spine2", "leaf1").a == End("leaf1", 2)
    assert fabric.config_links()[:2] == [("0x11:1", "0x1:1"), ("0x11:2", "0x2:1")]
    assert fabric.bridge("leaf1", "ul1a2b") == "ul1a2b-leaf1"


def test_leaf_spine_puts_nodes_on_two_leaves_and_the_external_host_on_the_third():
    fabric = topology.parse("leaf-spine")

    assert [fabric.node_switch(i, nodes=4) for i in (1, 2, 3, 4)] == ["leaf1", "leaf2", "leaf1", "leaf2"]
    assert fabric.external == "leaf3"
    assert "leaf3" not in fabric.node_switches


@pytest.mark.parametrize("spec", ["leaf-spine", "line:2", "line:5", "line:8"])
def test_ports_are_distinct_per_switch_from_one_and_hosts_start_above_them(spec):
    fabric = topology.parse(spec)

    for switch, ports in ports_of(fabric).items():
        assert sorted(ports) == list(range(1, len(ports) + 1)), switch
    assert fabric.first_host_port == 1 + max(max(p) for p in ports_of(fabric).values())
    assert len({s.dpid for s in fabric.switches}) == len(fabric.switches)
    names = [name for c in fabric.cables for name in c.veth_names("ul1a2b")] + [
        fabric.bridge(s.name, "ul1a2b") for s in fabric.switches]
    assert len(set(names)) == len(names) and max(map(len, names)) <= 15


def test_line_is_a_row_with_nodes_from_first_to_last():
    fabric = topology.parse("line:4")

    assert [(c.a.switch, c.b.switch) for c in fabric.cables] == [("s1", "s2"), ("s2", "s3"), ("s3", "s4")]
    assert [s.dpid for s in fabric.switches] == [1, 2, 3, 4]
    assert fabric.external == "s1"
    assert [fabric.node_switch(i, nodes=2) for i in (1, 2)] == ["s1", "s4"]
    assert [fabric.node_switch(i, nodes=3) for i in (1, 2, 3)] == ["s1", "s3", "s4"]
    assert fabric.node_switch(1, nodes=1) == "s1"
    assert fabric.cables_of("s2") == fabric.cables[:2]


@pytest.mark.parametrize("spec, says", [
    ("ring", "one of single, leaf-spine, line:N"), ("line:", "one of"), ("line:1", "2 to 8 switches"),
    ("line:9", "2 to 8 switches"), ("line:x", "one of")])
def test_bad_topology_says_what_there_is(spec, says):
    with pytest.raises(TopologyError, match=says):
        topology.parse(spec)


def test_names_that_are_not_there_are_named_with_what_is():
    fabric = topology.parse("leaf-spine")

    with pytest.raises(TopologyError, match="no switch 'leaf9': this lab has spine1, spine2, leaf1"):
        fabric.cable("leaf9", "spine1")
    with pytest.raises(TopologyError, match="no link between leaf1 and leaf2: this lab's links are leaf1-spine1"):
        fabric.cable("leaf1", "leaf2")
    with pytest.raises(TopologyError, match="no link between sw and sw: this lab's links are none"):
        topology.parse("single").cable("sw", "sw")
