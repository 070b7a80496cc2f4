"""`underlayctl switches`: connected?, role, flows desired and actual, last convergence, in sync?"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ctl.render import age, dpid_text, table
from ctl.verbs import no_arguments, reads

NAME = "switches"
HELP = "switches: connected, OpenFlow role, flows desired/actual, last convergence, in sync"

add_arguments = no_arguments
fetch = reads("/v1/switches")


def render(data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str:
    rows = [(dpid_text(s["dpid"]), s["name"], "yes" if s["connected"] else "NO", s["role"], s["flows_desired"],
             s["flows_actual"], age(s["last_convergence"], now=now), sync_text(s["in_sync"]))
            for s in data["switches"]]
    lines = [table(("SWITCH", "NAME", "CONNECTED", "ROLE", "DESIRED", "ACTUAL", "CONVERGED", "IN SYNC"), rows,
                   right=("DESIRED", "ACTUAL"))]
    lines += [f"switch {dpid_text(s['dpid'])}: {s['error']}" for s in data["switches"] if s.get("error")]
    if any(s["in_sync"] is False for s in data["switches"]):
        lines.append("out of sync: the switch's flows differ from the desired ones (`underlayctl flows diff` shows "
                     "how); the controller sends that difference when it next reads the switch (on reconnect)")
    return "\n".join(lines)


def sync_text(in_sync: bool | None) -> str | None:
    return None if in_sync is None else "yes" if in_sync else "NO"
