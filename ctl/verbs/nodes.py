"""`underlayctl nodes`: registered nodes, their uplink and how many pods each holds."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl.client import Client
from ctl.render import dpid_text, table

NAME = "nodes"
HELP = "registered nodes: address, MAC, switch port, pods"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return client.get("/v1/nodes")


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    rows = [(n["name"], ",".join(filter(None, (n["ip"], n["ip6"]))), n["mac"],
             None if n["dpid"] is None else dpid_text(n["dpid"]), n["port"] if n["port"] is not None else "not learned",
             n["pods"]) for n in data["nodes"]]
    return table(("NODE", "IP", "MAC", "SWITCH", "PORT", "PODS"), rows, right=("PODS",))
