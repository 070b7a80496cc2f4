"""`underlayctl graph [--format svg|dot] [-o FILE]`: a picture of the fabric (ctl/graph.py)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl import graph
from ctl.client import Client

NAME = "graph"
HELP = "an SVG of the fabric: switches, ports, nodes, pods with addresses, coloured by state (-o FILE)"
# Colours: ctl/graph.py's COLOURS and LEGEND (the legend is drawn under the picture).


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("svg", "dot"), default="svg", help="SVG (default) or Graphviz source")


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The fabric's parts, and which pods' addresses have a flow that differs on a connected switch."""
    switches = client.get("/v1/switches")["switches"]
    pods = client.get("/v1/pods")["pods"]
    diffs = [client.get(f"/v1/switches/{s['dpid']}/flows?state=diff") for s in switches if s["in_sync"] is False]
    return {"switches": switches, "nodes": client.get("/v1/nodes")["nodes"], "pods": pods,
            "topology": client.get_optional("/v1/topology"),
            "drifted": graph.drifted(diffs, (ip for pod in pods for ip in pod["ips"]))}


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    picture = graph.fabric(data)
    return picture.source if args.format == "dot" else graph.svg(picture)
