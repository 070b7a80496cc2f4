"""`underlayctl flows diff|show [--switch DPID]`: a switch's flows, and what differs between what
the controller wants there and what the switch holds (read through the controller's OpenFlow
session). A diff is exactly what the controller sends when it next reads that switch (its worker
reads the switch on connect and after a failed convergence, and sends only changes in between)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl import explain
from ctl.client import Client, CtlError
from ctl.render import dpid_text

NAME = "flows"
HELP = "flows of the switches: `diff` desired vs actual, `show` one state"
LEGEND = ("- on the switch but not desired: the controller deletes it when it next reads the switch\n"
          "+ desired but not on the switch: the controller adds it when it next reads the switch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--explain", nargs="?", const=explain.STDIN, metavar="DPID",
                        help="flows in words (table, purpose, owner): `ovs-ofctl dump-flows` output from standard "
                             "input, or what switch DPID holds (ctl/explain.py)")
    actions = parser.add_subparsers(dest="flows_action", metavar="ACTION")
    diff = actions.add_parser("diff", help="desired vs actual flows, per switch")
    show = actions.add_parser("show", help="a switch's flows, desired (default) or actual")
    for each in (diff, show):
        each.add_argument("--switch", metavar="DPID", help="only this switch (0x1, 1 or 0000000000000001)")
    show.add_argument("--state", choices=("desired", "actual"), default="desired")


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    if args.explain is not None:
        return explain.fetch(client.get, args.explain)
    if args.flows_action is None:
        raise CtlError("say what: `flows diff` or `flows show` (underlayctl flows --help)")
    state = "diff" if args.flows_action == "diff" else args.state
    switches = client.get("/v1/switches")["switches"]
    if args.switch is not None:
        answer = client.get(f"/v1/switches/{args.switch}/flows?state={state}")  # the controller names a bad one
        chosen = [s for s in switches if s["dpid"] == answer["dpid"]]
        return {"switches": [{**_summary(chosen[0] if chosen else {"dpid": answer["dpid"]}), **answer}]}
    found = []
    for switch in switches:
        if state != "desired" and not switch["connected"]:
            found.append(_summary(switch))
            continue
        found.append({**_summary(switch), **client.get(f"/v1/switches/{switch['dpid']}/flows?state={state}")})
    return {"switches": found}


def _summary(switch: dict[str, Any]) -> dict[str, Any]:
    return {"dpid": switch["dpid"], "name": switch.get("name"), "connected": switch.get("connected")}


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    if getattr(args, "explain", None) is not None:
        return explain.render(data)
    blocks = [_diff(s) if args.flows_action == "diff" else _show(s) for s in data["switches"]]
    if args.flows_action == "diff" and any(s.get("in_sync") is False for s in data["switches"]):
        blocks.append(LEGEND)
    return "\n".join(blocks) if blocks else "no switches known to the controller"


def _title(switch: dict[str, Any]) -> str:
    name = f" ({switch['name']})" if switch.get("name") else ""
    return f"switch {dpid_text(switch['dpid'])}{name}"


def _diff(switch: dict[str, Any]) -> str:
    if "in_sync" not in switch:
        return f"{_title(switch)}: not connected, nothing to compare"
    changes = [("-", flow) for flow in switch["to_delete"]] + [("+", flow) for flow in switch["to_add"]]
    if not changes:
        return f"{_title(switch)}: in sync"
    lines = [f"{_title(switch)}: {len(changes)} flow{'s' if len(changes) != 1 else ''} differ"]
    lines += [f"  {sign} {line(flow)}" for sign, flow in changes]
    return "\n".join(lines)


def _show(switch: dict[str, Any]) -> str:
    if "flows" not in switch:
        return f"{_title(switch)}: not connected, its flows cannot be read"
    flows = switch["flows"]
    return "\n".join([f"{_title(switch)}: {len(flows)} flows ({switch['state']})", *(f"  {line(f)}" for f in flows)])


def line(flow: dict[str, Any]) -> str:
    """A flow as openflow.tables.render writes it, then why it exists and whose it is."""
    why = flow["purpose"] + (f" for {flow['owner']}" if flow.get("owner") else "")
    return f"{flow['text']}  # {why}"
