"""`underlayctl graph [--format svg|dot] [-o FILE]`: a picture of the fabric (ctl/graph.py)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl import graph
from ctl.client import Client

NAME = "graph"
HELP = "an SVG of the fabric: switches, ports, nodes, pods with addresses, coloured by state (-o FILE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("svg", "dot"), default="svg", help="SVG (default) or Graphviz source")


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return {"switches": client.get("/v1/switches")["switches"], "nodes": client.get("/v1/nodes")["nodes"],
            "pods": client.get("/v1/pods")["pods"], "topology": client.get_optional("/v1/topology")}


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    picture = graph.fabric(data)
    return picture.source if args.format == "dot" else graph.svg(picture)
