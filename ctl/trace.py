"""`underlayctl trace IP|POD`: where an address is, which flows make it reachable, whether the switch
has them, and, where the switch can be reached, what it does with an ARP request and an IPv4
packet for it, ending in one line: reachable, or dropped at table N by flow F and why.

The order matters: the packets are traced (`ofproto/trace` only simulates) before the switch's
flows are read through the controller, because that read asks the controller to repair what it
finds different (`repair=true`, controller/API.md): the trace shows the switch as it was found, and
the verdict says the controller will repair it, which it then does at once. The decisions are pure
(openflow.tracing, openflow.ofproto_trace); this module fetches, runs and prints.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctl.ovsprobe import OvsProbe, ProbeError
from openflow import cookies
from openflow.ofproto_trace import LOCAL, Leg, Outcome, TraceError, judge, verdict
from openflow.tracing import (Concern, Drift, FlowView, Packet, Subject, concerning, default_source, drift,
                              find_subject, pod_arp_reply, probes, trusted_ports)

Json = dict[str, Any]
Get = Callable[[str], Json]  # GET a path of the controller's REST, the answer's JSON; raises on an error status


class TraceFailed(RuntimeError):
    """The trace cannot be made (nothing placed there, no port to trace from); the message says why."""


@dataclass
class Report:
    subject: Subject
    node: str | None
    dpid: int
    desired: tuple[Concern, ...]
    actual: tuple[Concern, ...] | None = None
    actual_error: str | None = None
    from_port: int | None = None
    bridge: str | None = None
    legs: tuple[Leg, ...] = ()
    trace_error: str | None = None
    reachable: bool | None = None
    verdict: str = ""
    drift: Drift | None = field(default=None, repr=False)


def trace(get: Get, query: str, *, ovs_rundir: Path | None = None, from_port: int | None = None,
          api_errors: tuple[type[Exception], ...] = ()) -> Report:
    """Everything `underlayctl trace` shows about `query` (an IP or a pod's namespace/name).
    `api_errors` are what `get` raises for an error answer: reading the switch's flows may fail
    (switch not connected) without failing the trace."""
    placements = get("/v1/placements")["placements"]
    row = _placement(query, placements)
    subject, dpid = _subject(row), int(row["dpid"])
    desired_json = get(f"/v1/switches/{dpid:#x}/flows?state=desired")["flows"]
    desired_flows = [FlowView.from_json(flow) for flow in desired_json]
    report = Report(subject, _node(row), dpid, concerning(desired_flows, subject))
    report.from_port = from_port if from_port is not None else _default_port(desired_flows)
    if ovs_rundir is not None and report.from_port is not None:
        _trace_packets(report, ovs_rundir, placed=_placed(placements, dpid), owners=owner_names(desired_json))
    try:
        report.actual = concerning(_flows(get, dpid, "actual&repair=true"), subject)
        report.drift = drift(report.desired, report.actual)
    except api_errors as err:
        report.actual_error = str(err)
    report.reachable, report.verdict = _verdict(report, traced=ovs_rundir is not None)
    return report


def _placement(query: str, placements: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The placement `query` names, on a switch port."""
    try:
        row = find_subject(query, placements)
    except LookupError as missing:
        raise TraceFailed(str(missing)) from None
    if row.get("dpid") is None or row.get("port") is None:
        raise TraceFailed(f"{query}: {row.get('owner') or row['ip']} is not on a switch yet (its node's port is not "
                          "known): `underlayctl nodes` shows where each node is")
    return row


def _subject(row: Mapping[str, Any]) -> Subject:
    """The placement the controller answered, checked: its values end up in ofproto/trace's flow."""
    try:
        ip = ipaddress.ip_address(str(row["ip"])).compressed
        port = int(row["port"])
    except (ValueError, TypeError):
        raise TraceFailed(f"the controller answered a malformed placement: {dict(row)}") from None
    if not _MAC.fullmatch(str(row["mac"])) or not 0 < port < LOCAL:
        raise TraceFailed(f"the controller answered a malformed placement: {dict(row)}")
    return Subject(ip, str(row["mac"]).lower(), port, str(row.get("owner") or ""))


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def owner_names(flows: list[Json]) -> dict[int, str]:
    """{owner id: name} from the controller's flows (each names its owner, decoded from its cookie)."""
    return {cookies.decode(int(str(flow["cookie"]), 0)).owner_id: str(flow["owner"])
            for flow in flows if flow.get("owner")}


def _flows(get: Get, dpid: int, state: str) -> list[FlowView]:
    return [FlowView.from_json(flow) for flow in get(f"/v1/switches/{dpid:#x}/flows?state={state}")["flows"]]


def _node(row: Mapping[str, Any]) -> str | None:
    return str(row["node"]) if row.get("node") else None


def _default_port(flows: list[FlowView]) -> int | None:
    """The first trusted port: where routers and external hosts, who reach pods, come from."""
    ports = trusted_ports(flows)
    return ports[0] if ports else None


def _placed(placements: list[Mapping[str, Any]], dpid: int) -> list[Subject]:
    return [_subject(p) for p in placements if p.get("dpid") == dpid and p.get("port") is not None]


def _trace_packets(report: Report, rundir: Path, *, placed: list[Subject], owners: Mapping[int, str]) -> None:
    """ofproto/trace the probes on the switch of `rundir`; what keeps them from being traced (an
    IPv6 address, a switch that cannot be asked) goes into the report instead."""
    if ":" in report.subject.ip:
        report.trace_error = ("packets are traced for IPv4 addresses (ARP and ICMP); for an IPv6 one the flows "
                              "above (Neighbor Discovery answered, forwarding, port security) are what there is")
        return
    try:
        _run_probes(report, OvsProbe(rundir), placed=placed, owners=owners)
    except (ProbeError, TraceError) as err:
        report.trace_error = str(err)


def _run_probes(report: Report, probe: OvsProbe, *, placed: list[Subject], owners: Mapping[int, str]) -> None:
    """The probes (openflow.tracing.probes); when the switch does not answer the ARP request itself
    but passes it on to the pod, the pod's own reply too."""
    assert report.from_port is not None
    source = default_source(report.from_port, placed)
    bridge = report.bridge = probe.bridge_of(report.dpid)
    ports = probe.datapath_ports(bridge)
    if report.from_port not in ports.values():
        known = ", ".join(str(port) for port in sorted(ports.values()) if port < LOCAL)
        raise TraceFailed(f"--from-port {report.from_port}: switch {report.dpid:016x} (bridge {bridge}) has no such "
                          f"port; its ports are {known}")

    def run(packet: Packet) -> Leg:
        return judge(probe.trace(bridge, packet.ofproto_flow()), packet, dp_ports=ports, owners=owners)

    arp, there, back = probes(report.subject, source)
    first = run(arp)
    legs = [first]
    if first.outcome is Outcome.DELIVERED:
        legs.append(run(pod_arp_reply(report.subject, source)))
    report.legs = (*legs, run(there), run(back))


def _verdict(report: Report, *, traced: bool) -> tuple[bool | None, str]:
    if report.legs:
        reachable, line = verdict(report.legs, mac=report.subject.mac, from_port=report.legs[0].packet.in_port)
    elif report.from_port is None:
        reachable, line = None, "not traced: the switch has no trusted port to trace from (give --from-port)"
    elif not traced:
        reachable, line = None, "not traced (give --ovs-rundir, the switch's run directory, to trace packets)"
    else:
        reachable, line = None, f"not traced: {report.trace_error}"
    if report.drift is not None and not report.drift.in_sync:
        return reachable, f"{line}; {report.drift.describe(len(report.desired))}"
    if report.actual_error:
        return reachable, f"{line}; what the switch holds is unknown: {report.actual_error}"
    if not report.desired:
        return False, f"{line}; the controller wants no flow for it on switch {report.dpid:016x}"
    return reachable, line


# -- output ---------------------------------------------------------------------------------------

def to_json(report: Report) -> Json:
    """The report as `underlayctl trace --json` prints it, and what `render` reads."""
    subject, gap = report.subject, report.drift
    missing = set(gap.missing) if gap else set()
    return {
        "ip": subject.ip, "owner": subject.owner or None, "mac": subject.mac, "node": report.node,
        "dpid": f"{report.dpid:016x}", "port": subject.port,
        "desired": [{"role": c.role.name.lower(), "label": c.role.value, "flow": c.flow.text(),
                     "on_switch": None if gap is None else c.flow not in missing} for c in report.desired],
        "extra": None if gap is None else [flow.text() for flow in gap.extra],
        "in_sync": None if gap is None else gap.in_sync, "actual_error": report.actual_error,
        "bridge": report.bridge, "from_port": report.from_port, "trace_error": report.trace_error,
        "trace": [{"packet": leg.packet.describe(), "ofproto_flow": leg.packet.ofproto_flow(),
                   "outcome": leg.outcome.name.lower(), "table": leg.step.table if leg.step else None,
                   "flow": leg.step.rule() if leg.step else None, "ports": list(leg.ports), "why": leg.why}
                  for leg in report.legs],
        "reachable": report.reachable, "verdict": report.verdict,
    }


def render(data: Json) -> str:
    """The human form of `to_json`'s answer: who and where, its flows (marked when the switch lacks
    them), what the switch has extra, the traced packets, the verdict."""
    who = f"{data['owner']}  " if data.get("owner") else ""
    out = [f"{who}{data['ip']}  MAC {data['mac']}", f"node {data.get('node') or '-'}, switch {data['dpid']} "
           f"port {data['port']}", "", f"flows the controller wants for it ({len(data['desired'])}):"]
    width = max((len(c["label"]) for c in data["desired"]), default=0)
    out += [f"  {'MISSING ' if c['on_switch'] is False else ''}{c['label']:<{width}}  {c['flow']}"
            for c in data["desired"]]
    if data.get("actual_error"):
        out.append(f"what the switch holds: unknown ({data['actual_error']})")
    elif data.get("in_sync") is not None:
        have = sum(c["on_switch"] is True for c in data["desired"])
        out.append(f"the switch holds {have} of them" + (" (all)" if have == len(data["desired"]) else ""))
        out += [f"  EXTRA {flow}" for flow in data.get("extra") or ()]
    if data["trace"]:
        out += ["", f"ofproto/trace on bridge {data['bridge']} from port {data['from_port']}:"]
        out += [f"  {leg['packet']}: {leg['why']}" for leg in data["trace"]]
    out += ["", f"verdict: {data['verdict']}"]
    return "\n".join(out)
