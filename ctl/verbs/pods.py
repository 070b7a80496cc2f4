"""`underlayctl pods [POD|IP ...] [--node NODE]`: every pod interface holding an address."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl.client import Client, CtlError
from ctl.render import dpid_text, table

NAME = "pods"
HELP = "pods with their address, MAC, node, switch port and state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pods", nargs="*", metavar="POD|IP", help="only these: NAMESPACE/NAME, NAME or an address")
    parser.add_argument("--node", help="only the pods of this node")


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return {"pods": select(client.get("/v1/pods")["pods"], args.pods, node=args.node)}


def select(pods: list[dict[str, Any]], wanted: list[str], *, node: str | None = None) -> list[dict[str, Any]]:
    """The pods `wanted` names (each must name one at least), of `node` if given."""
    if node is not None:
        pods = [pod for pod in pods if pod["node"] == node]
    if not wanted:
        return pods
    chosen: list[dict[str, Any]] = []
    for name in wanted:
        found = [pod for pod in pods if matches(pod, name)]
        if not found:
            where = f" on node {node}" if node else ""
            raise CtlError(f"pod {name}: no such pod{where} holds an address (`underlayctl pods` lists them)")
        chosen += [pod for pod in found if pod not in chosen]
    return chosen


def matches(pod: dict[str, Any], name: str) -> bool:
    return name in (f"{pod['namespace']}/{pod['name']}", pod["name"], *pod["ips"])


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    rows = [(f"{p['namespace']}/{p['name']}", p["ifname"], p["node"], ",".join(p["ips"]), p["mac"], p["mode"],
             p["pool"], None if p["dpid"] is None else dpid_text(p["dpid"]), p["port"], p["state"])
            for p in data["pods"]]
    return table(("POD", "IF", "NODE", "IP", "MAC", "MODE", "POOL", "SWITCH", "PORT", "STATE"), rows,
                 right=("PORT",))
