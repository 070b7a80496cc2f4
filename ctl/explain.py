"""`underlayctl flows --explain [DPID]`: flows in words (table name, purpose, owner).

Without DPID it reads `ovs-ofctl dump-flows` output on standard input (pasted from any switch,
with or without `--no-stats` or table names) and explains it with openflow.explain, naming owners
from the placements the controller knows (`GET /v1/placements`; without an answer, owners stay
ids in hex). With DPID it reads what that switch holds through the controller's OpenFlow session
(`GET /v1/switches/<dpid>/flows?state=actual`, already decoded by the controller).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from ctl.client import CtlError
from openflow.explain import Explained, explain, owner_map
from openflow.model import Placement
from openflow.tracing import FlowView

Json = dict[str, Any]
Get = Callable[[str], Json]
STDIN = "-"


def fetch(get: Get, source: str, *, stdin: TextIO | None = None) -> Json:
    """The explained flows of `source`: STDIN (a dump on standard input) or a switch's DPID."""
    if source != STDIN:
        answer = get(f"/v1/switches/{source}/flows?state=actual")
        return {"source": f"switch {answer['dpid']:016x} (read through the controller)",
                "flows": [_from_json(flow) for flow in answer["flows"]]}
    stream = stdin or sys.stdin
    if stream.isatty():
        raise CtlError("flows --explain: pipe `ovs-ofctl -O OpenFlow13 dump-flows BRIDGE` into it, "
                       "or give a switch: flows --explain DPID")
    text = stream.read()
    try:
        owners, note = owner_map(_placements(get("/v1/placements")["placements"])), None
    except CtlError as err:
        owners, note = {}, f"owners not named: {err}"
    flows = explain(text, owners=owners)
    if not flows and text.strip():
        raise CtlError("flows --explain: no flow in the input: it takes `ovs-ofctl dump-flows` output")
    return {"source": "standard input", "flows": [_from_explained(flow) for flow in flows], "note": note}


def _placements(rows: list[Json]) -> list[Placement]:
    return [Placement(str(row["ip"]), str(row["mac"]), int(row.get("port") or 0), str(row.get("owner") or ""))
            for row in rows]


def _from_explained(flow: Explained) -> Json:
    return {"table": flow.table, "priority": flow.priority, "match": flow.match, "actions": flow.actions,
            "cookie": f"{flow.cookie:#018x}", "purpose": flow.purpose, "owner": flow.owner or None}


def _from_json(flow: Json) -> Json:
    view = FlowView.from_json(flow)
    return {"table": view.table, "priority": view.priority, "match": ",".join(f"{k}={v}" for k, v in view.match),
            "actions": view.actions, "cookie": flow["cookie"], "purpose": flow["purpose"], "owner": flow.get("owner")}


def render(data: Json) -> str:
    """One flow a line, `table  prio  match  actions  # purpose for owner`, under where they came from."""
    rows = data["flows"]
    width = max((len(row["table"]) for row in rows), default=0)
    lines = [f"{len(rows)} flow{'s' * (len(rows) != 1)} from {data['source']}:"]
    lines += [f"  {row['table']:<{width}}  prio={row['priority']:<5} {row['match'] or '*'}  actions={row['actions']}"
              f"  # {row['purpose']}{' for ' + row['owner'] if row.get('owner') else ''}" for row in rows]
    if data.get("note"):
        lines.append(f"({data['note']})")
    return "\n".join(lines)
