"""The fabric as a picture: switches with their ports, nodes on node ports, pods on nodes (with
their addresses), links between switches; each coloured by its state. Pure: the controller's
answers (GET /v1/switches, /v1/nodes, /v1/pods, and /v1/topology when the controller has it) in,
a `graphviz.Graph` out; `svg` lays it out with Graphviz's `dot`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import graphviz

from ctl.client import CtlError
from ctl.render import dpid_text

# state -> (fill, border): green is as it should be, orange needs the controller, red is broken
COLOURS = {"in_sync": ("#c8e6c9", "#2e7d32"), "out_of_sync": ("#ffe0b2", "#ef6c00"), "down": ("#ffcdd2", "#c62828"),
           "placed": ("#c8e6c9", "#2e7d32"), "drifted": ("#ffe0b2", "#ef6c00"), "unplaced": ("#eeeeee", "#757575"),
           "located": ("#bbdefb", "#1565c0"), "unlocated": ("#eeeeee", "#757575"), "trusted": ("#f5f5f5", "#424242")}
NL = "\\n"  # DOT's line break inside a label (centred)
LINK_STYLES = {"up": ("#424242", "solid"), "down": ("#c62828", "dashed"), "miscabled": ("#ef6c00", "dotted")}
LEGEND = ("switch: green in sync, orange its flows differ from the desired ones, red not connected | "
          "node: blue uplink located, grey not yet | pod: green placed, orange a flow of its address differs on "
          "the switch, grey its node's port unknown")


def switch_state(switch: dict[str, Any]) -> str:
    if not switch["connected"]:
        return "down"
    return "out_of_sync" if switch["in_sync"] is False else "in_sync"


def fabric(data: dict[str, Any]) -> graphviz.Graph:
    """The graph of `data` = {"switches": [...], "nodes": [...], "pods": [...], "topology": {...} | None}."""
    graph = graphviz.Graph("underlay", graph_attr={"rankdir": "LR", "fontname": "Helvetica", "label": LEGEND,
                                                    "labelloc": "b", "fontsize": "10"},
                           node_attr={"fontname": "Helvetica", "fontsize": "11", "style": "filled"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    for switch in data["switches"]:
        _switch(graph, switch)
    for node in data["nodes"]:
        _node(graph, node)
    drifted = set(data.get("drifted", ()))
    for index, pod in enumerate(data["pods"]):
        state = "drifted" if pod["state"] == "placed" and drifted & set(pod["ips"]) else pod["state"]
        fill, border = COLOURS.get(state, COLOURS["unplaced"])
        pod_id = f"pod{index}"
        graph.node(pod_id, NL.join([f"{pod['namespace']}/{pod['name']}", *pod["ips"], pod["mac"]]),
                   shape="ellipse", fillcolor=fill, color=border)
        graph.edge(_node_id(pod["node"]), pod_id, label=pod["ifname"])
    for link in ((data.get("topology") or {}).get("links") or []):
        _link(graph, link)
    return graph


def drifted(diffs: Iterable[dict[str, Any]], ips: Iterable[str]) -> list[str]:
    """Which of `ips` a differing flow matches on (GET /v1/switches/<dpid>/flows?state=diff answers)."""
    wanted = set(ips)
    found = {value for diff in diffs for flow in [*diff.get("to_add", ()), *diff.get("to_delete", ())]
             for value in flow["match"].values() if value in wanted}
    return sorted(found)


def _switch(graph: graphviz.Graph, switch: dict[str, Any]) -> None:
    fill, border = COLOURS[switch_state(switch)]
    name = f"{switch['name']}{NL}" if switch.get("name") else ""
    sync = {"in_sync": "in sync", "out_of_sync": "OUT OF SYNC", "down": "NOT CONNECTED"}[switch_state(switch)]
    flows = f"flows {switch['flows_actual']}/{switch['flows_desired']}" if switch["connected"] else \
        f"flows -/{switch['flows_desired']}"
    graph.node(_switch_id(switch["dpid"]), f"{name}switch {dpid_text(switch['dpid'])}{NL}{sync}, {flows}",
               shape="box", fillcolor=fill, color=border, penwidth="2")
    for port in switch.get("ports", []):
        if port["role"] == "node":
            continue  # drawn as the edge to its node
        port_id = f"{_switch_id(switch['dpid'])}p{port['number']}"
        fill, border = COLOURS["trusted"]
        graph.node(port_id, f"port {port['number']}{NL}{port['role']}", shape="cds", fillcolor=fill, color=border)
        graph.edge(_switch_id(switch["dpid"]), port_id)


def _node(graph: graphviz.Graph, node: dict[str, Any]) -> None:
    located = node["dpid"] is not None and node["port"] is not None
    fill, border = COLOURS["located" if located else "unlocated"]
    label = NL.join([f"node {node['name']}", *filter(None, (node["ip"], node.get("ip6"))), node["mac"]])
    graph.node(_node_id(node["name"]), label, shape="component",
               fillcolor=fill, color=border)
    if located:
        graph.edge(_switch_id(node["dpid"]), _node_id(node["name"]), label=f"port {node['port']}")


def _link(graph: graphviz.Graph, link: dict[str, Any]) -> None:
    """A link of GET /v1/topology: {"a": "0x1:5", "b": "0x3:1", "state": "up"|"down"|"miscabled"}."""
    try:
        (a, a_port), (b, b_port) = (_end(link["a"]), _end(link["b"]))
    except (KeyError, ValueError, TypeError):
        return  # a shape this version does not know: the rest of the picture still helps
    colour, style = LINK_STYLES.get(str(link.get("state")), ("#424242", "solid"))
    graph.edge(_switch_id(a), _switch_id(b), taillabel=str(a_port), headlabel=str(b_port), color=colour, style=style,
               penwidth="2", label=str(link.get("state", "")))


def _end(end: Any) -> tuple[int, int]:
    if isinstance(end, dict):
        return int(end["dpid"]), int(end["port"])
    dpid, _, port = str(end).rpartition(":")
    return int(dpid, 0), int(port)


def _switch_id(dpid: int) -> str:
    return f"sw{dpid:x}"


def _node_id(name: str) -> str:
    return "node_" + "".join(ch if ch.isalnum() else f"_{ord(ch):x}_" for ch in name)


def svg(graph: graphviz.Graph) -> str:
    """The picture laid out by Graphviz's `dot`."""
    try:
        rendered: str = graph.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise CtlError("Graphviz's `dot` is not installed (apt-get install graphviz); "
                       "`underlayctl graph --format dot` writes the source instead") from None
    return rendered
