"""The fabric's picture from the controller's JSON (ctl/graph.py): what it draws, in which colour,
and the SVG Graphviz's `dot` lays out. No root, no controller; `dot` is Debian's graphviz (Makefile
APT_PACKAGES)."""

from __future__ import annotations

import argparse
import datetime
import shutil
import xml.etree.ElementTree as ET

import pytest
from samples import FLOW, STALE, nodes, pods, switches

from ctl import graph
from ctl.verbs import graph as graph_verb

DATA = {"switches": switches(), "nodes": nodes(), "pods": pods(), "drifted": ["198.18.0.101"],
        "topology": {"links": [{"a": "0x1:5", "b": "0x2:1", "state": "up"}, {"a": "0x2:2", "b": "0x30:1", "state": "down"},
                               {"a": {"dpid": 1, "port": 6}, "b": {"dpid": 0x30, "port": 2}, "state": "miscabled"},
                               {"what": "a link this version cannot read"}]}}


def test_switches_nodes_pods_and_links_are_drawn_in_the_colour_of_their_state() -> None:
    source = graph.fabric(DATA).source
    assert 'sw1 [label="leaf1\\nswitch 0000000000000001\\nin sync, flows 40/40"' in source
    assert 'fillcolor="#c8e6c9"' in _line(source, "sw1 [")  # in sync: green
    assert 'fillcolor="#ffe0b2"' in _line(source, "sw2 [") and "OUT OF SYNC, flows 11/12" in source
    assert 'fillcolor="#ffcdd2"' in _line(source, "sw30 [") and "NOT CONNECTED, flows -/9" in source
    assert 'sw1p1 [label="port 1\\ntrusted"' in source and "sw1 -- sw1p1" in source
    assert 'sw1 -- node_node1 [label="port 4"]' in source
    assert 'fillcolor="#eeeeee"' in _line(source, "node_node2 [")  # its port not learned: grey, no edge
    assert "-- node_node2" not in source
    assert 'pod0 [label="default/web-0\\n198.18.0.100\\n02:00:c6:12:00:64"' in source
    assert 'pod2 [label="default/db-0\\n198.18.0.102\\nfd00:18::102' in source
    assert 'fillcolor="#eeeeee"' in _line(source, "pod2 [")  # unplaced: grey
    assert 'fillcolor="#ffe0b2"' in _line(source, "pod1 [")  # a flow of its address differs on the switch
    assert "node_node1 -- pod0" in source and "node_node2 -- pod2" in source
    assert 'sw1 -- sw2 [label=up color="#424242" headlabel=1' in source
    assert 'sw2 -- sw30 [label=down color="#c62828"' in source and "style=dashed" in _line(source, "sw2 -- sw30")
    assert "style=dotted" in _line(source, "sw1 -- sw30")


def _line(source: str, start: str) -> str:
    return next(line for line in source.splitlines() if line.strip().startswith(start))


def test_the_addresses_a_differing_flow_matches_on_are_drifted() -> None:
    diffs = [{"to_add": [FLOW], "to_delete": []}, {"to_add": [], "to_delete": [STALE]}, {"in_sync": True}]
    assert graph.drifted(diffs, ["198.18.0.100", "198.18.0.101", "02:00:00:00:00:09"]) == [
        "02:00:00:00:00:09", "198.18.0.100"]


def test_without_a_topology_endpoint_one_switch_is_drawn_all_the_same() -> None:
    source = graph.fabric({**DATA, "switches": switches()[:1], "topology": None}).source
    assert "sw1 [" in source and "sw2" not in source


def test_odd_node_names_make_valid_graphviz_ids() -> None:
    weird = {**nodes()[0], "name": 'a:b "c"'}
    source = graph.fabric({"switches": switches()[:1], "nodes": [weird], "pods": [], "topology": None}).source
    assert "node_a_3a_b_20__22_c_22_" in source and 'label="node a:b \\"c\\"' in source


def test_the_svg_holds_every_switch_node_pod_and_address() -> None:
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is missing: apt-get install graphviz (Makefile APT_PACKAGES)", pytrace=False)
    svg = graph_verb.render(DATA, argparse.Namespace(format="svg"), now=datetime.datetime.now(datetime.UTC))
    texts = {t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    assert {"switch 0000000000000001", "leaf1", "switch 0000000000000030", "node node1", "node node2",
            "default/web-0", "198.18.0.100", "198.18.0.101", "fd00:18::102", "port 4"} <= texts
    fills = {p.get("fill") for p in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}polygon")}
    assert {"#c8e6c9", "#ffe0b2", "#ffcdd2"} <= fills
    assert graph_verb.render(DATA, argparse.Namespace(format="dot"), now=datetime.datetime.now(datetime.UTC)) \
        .startswith("graph underlay {")
