"""`underlayctl pools`: each pool's size and use, with a bar per family."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl.render import bar, percent, table
from ctl.verbs import reads

NAME = "pools"
HELP = "address pools: size, allocated, reserved (sticky), cooling down, as bars"
LEGEND = "bar: # allocated  r reserved for a StatefulSet pod  c cooling down after release  . free"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=30, help="characters of a usage bar (30)")


fetch = reads("/v1/pools")


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    rows = []
    for pool in data["pools"]:
        name = pool["name"] + (" (default)" if pool["default"] else "")
        for family in pool["families"]:
            parts = [family["allocated"], family["reserved"], family["cooldown"]]
            rows.append((name, family["subnet"], family["size"], *parts,
                         bar(family["size"], parts, width=args.width), percent(sum(parts), family["size"])))
            name = ""  # a dual-stack pool's second line is its IPv6 family
    return table(("POOL", "SUBNET", "SIZE", "ALLOCATED", "RESERVED", "COOLDOWN", "USAGE", "USED"), rows,
                 right=("SIZE", "ALLOCATED", "RESERVED", "COOLDOWN", "USED")) + "\n" + LEGEND
