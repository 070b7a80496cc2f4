"""`underlayctl nodes`: registered nodes, their uplink and how many pods each holds."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl.render import dpid_text, table
from ctl.verbs import no_arguments, reads

NAME = "nodes"
HELP = "registered nodes: address, MAC, switch port, pods"

add_arguments = no_arguments
fetch = reads("/v1/nodes")


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    rows = [(n["name"], ",".join(filter(None, (n["ip"], n["ip6"]))), n["mac"],
             None if n["dpid"] is None else dpid_text(n["dpid"]), n["port"] if n["port"] is not None else "not learned",
             n["pods"]) for n in data["nodes"]]
    return table(("NODE", "IP", "MAC", "SWITCH", "PORT", "PODS"), rows, right=("PODS",))
