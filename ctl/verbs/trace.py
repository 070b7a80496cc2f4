"""`underlayctl trace IP|POD [--ovs-rundir DIR] [--from-port N]`: why an address is (un)reachable.

Where it is (pod, node, MAC, switch, port), the flows that answer ARP/ND for it, forward to it and
admit it from its port (desired, each marked when the switch lacks it), and, given the switch's run
directory, `ovs-appctl ofproto/trace` of an ARP request and an IPv4 packet from a port (by default
the switch's first trusted port) to it and of its answers, with a one-line verdict: reachable, or
dropped at table N by flow F and why. The work is in ctl/trace.py."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

from ctl import trace
from ctl.client import Client, CtlError

NAME = "trace"
HELP = "where an IP or pod is, its flows desired and on the switch, and (--ovs-rundir) a packet trace with a verdict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="IP|POD", help="an address, or a pod as namespace/name (or name)")
    parser.add_argument("--ovs-rundir", type=Path, metavar="DIR",
                        help="the switch's Open vSwitch run directory (where ovs-vswitchd's control socket is; "
                             "/var/run/openvswitch on a host, `underlay-lab status --json` prints the lab's): "
                             "trace packets there")
    parser.add_argument("--from-port", type=int, metavar="N",
                        help="the switch port the traced packets come from (default: its first trusted port)")


def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    try:
        report = trace.trace(client.get, args.target, ovs_rundir=args.ovs_rundir, from_port=args.from_port,
                             api_errors=(CtlError,))
    except trace.TraceFailed as err:
        raise CtlError(str(err)) from None
    return trace.to_json(report)


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    return trace.render(data)


def exit_status(data: dict[str, Any]) -> int:
    """3 when the trace found the address unreachable or the switch lacking its flows, else 0."""
    return 3 if data.get("reachable") is False or data.get("in_sync") is False else 0
