"""`ovs-appctl ofproto/trace` output → where a packet went and why, in words. No I/O.

Open vSwitch prints, per bridge, each table the packet visited with the flow it matched (or
"No match."), that flow's actions and commentary, then the datapath actions: the ports it leaves
by, in the datapath's numbering (`dpif/show` maps them to OpenFlow ports: `parse_dpif_ports`).
The samples under tests/openflow/ofproto_traces are real output of Open vSwitch 3.1 in the lab.

`judge` turns one trace of an `openflow.tracing.Packet` into a `Leg`: delivered where it should
go, answered by the switch (an ARP request turned into its reply, out the port it came in by),
or dropped (at which table, by which flow, and why, said the way an operator thinks about it:
"no port-security flow admits 198.18.0.5 from port 3").
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from openflow import cookies
from openflow.tables import INGRESS, L2, RESPONDER, table_name
from openflow.tracing import Kind, Packet

_TABLE_LINE = re.compile(r"^\s*(\d+)\.\s+(?:(?P<name>[A-Za-z_][\w-]*):\s+)?(?P<rest>.*)$")
_RULE = re.compile(r"^(?P<match>.*?),?\s*priority (?P<priority>\d+)(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$")
_DPIF_PORT = re.compile(r"^\s+(?P<name>\S+) (?P<of>\d+)/(?P<dp>\d+):")


class TraceError(ValueError):
    """The text is not ofproto/trace output (an error message from ovs-appctl, say)."""


@dataclass(frozen=True)
class Step:
    """One table the packet visited: the flow it matched (None: no flow matched) and what it did."""

    table: int
    match: str | None
    priority: int | None
    cookie: int | None
    actions: tuple[str, ...]
    notes: tuple[str, ...]  # Open vSwitch's commentary ("-> no learned MAC for destination, flooding")

    @property
    def name(self) -> str:
        return table_name(self.table)

    def rule(self) -> str:
        """The matched flow as `priority=0 actions=drop` (with its match, if any)."""
        if self.match is None:
            return "no flow (not even a miss flow)"
        match = f"{self.match} " if self.match else ""
        return f"{match}priority={self.priority} actions={','.join(self.actions) or 'drop'}"

    @property
    def drops(self) -> bool:
        return self.match is None or not self.actions or self.actions == ("drop",)


@dataclass(frozen=True)
class Trace:
    flow: str
    steps: tuple[Step, ...]
    datapath_actions: str

    def dp_outputs(self) -> tuple[int, ...]:
        """The datapath ports the packet leaves by (top-level numbers in the datapath actions)."""
        return tuple(int(token) for token in _top_level(self.datapath_actions) if token.isdigit())


def parse(text: str) -> Trace:
    """The first bridge's steps and the datapath actions of one ofproto/trace output."""
    flow = actions = None
    steps: list[Step] = []
    in_bridge = False
    for line in text.splitlines():
        if line.startswith("Flow: ") and flow is None:
            flow = line[len("Flow: "):].strip()
        elif line.startswith("bridge("):
            in_bridge = not steps  # a second bridge (a patch port) is not followed
        elif line.startswith("Datapath actions: "):
            actions = line[len("Datapath actions: "):].strip()
        elif in_bridge and (table := _TABLE_LINE.match(line)) and not line.startswith("    "):
            steps.append(_step(int(table.group(1)), table.group("rest")))
        elif in_bridge and steps and line.startswith("    ") and line.strip():
            steps[-1] = _with_line(steps[-1], line.strip())
        elif not line.strip() and steps:
            in_bridge = False
    if flow is None or actions is None:
        raise TraceError(f"not ofproto/trace output: {text.strip()[:200] or '(empty)'}")
    return Trace(flow, tuple(steps), actions)


def _step(table: int, rest: str) -> Step:
    if rest.strip().rstrip(".") == "No match":
        return Step(table, None, None, None, (), ())
    rule = _RULE.match(rest.strip())
    if rule is None:
        raise TraceError(f"table {table}: unexpected flow line {rest!r}")
    cookie = rule.group("cookie")
    return Step(table, rule.group("match"), int(rule.group("priority")), int(cookie, 16) if cookie else None, (), ())


def _with_line(step: Step, line: str) -> Step:
    if line.startswith(("->", ">>")):
        return Step(step.table, step.match, step.priority, step.cookie, step.actions, (*step.notes, line))
    return Step(step.table, step.match, step.priority, step.cookie, (*step.actions, line), step.notes)


def _top_level(actions: str) -> list[str]:
    """Split `set(eth(src=..)),set(arp(..)),2` on the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in actions:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def parse_dpif_ports(text: str, bridge: str) -> dict[int, int]:
    """{datapath port: OpenFlow port} of `bridge` from `ovs-appctl dpif/show`."""
    ports: dict[int, int] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            inside = line.strip() == f"{bridge}:"
        elif inside and (port := _DPIF_PORT.match(line)):
            ports[int(port.group("dp"))] = int(port.group("of"))
    return ports


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    ANSWERED = "answered by the switch"
    DROPPED = "dropped"
    ELSEWHERE = "sent elsewhere"


@dataclass(frozen=True)
class Leg:
    """One traced packet's fate, and the sentence that explains it."""

    packet: Packet
    outcome: Outcome
    step: Step | None  # the deciding table (the last one visited)
    why: str
    ports: tuple[int, ...]  # OpenFlow ports it leaves by
    answered_mac: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.DELIVERED, Outcome.ANSWERED)

    def line(self) -> str:
        """`ARP who-has 198.18.0.100 from 198.18.0.2 on port 1: answered by the switch ...`."""
        return f"{self.packet.describe()}: {self.why}"

    def where(self) -> str:
        """`table 0 (ingress)` of the deciding step."""
        return f"table {self.step.table} ({self.step.name})" if self.step else "no table"


def judge(trace: Trace, packet: Packet, *, dp_ports: Mapping[int, int], owners: Mapping[int, str] | None = None) -> Leg:
    """What became of `packet` according to `trace` (its ofproto/trace). The deciding flow is
    named by its cookie's purpose and owner (`owners`: owner id -> name, openflow.cookies)."""
    ports = tuple(sorted({dp_ports.get(dp, -dp) for dp in trace.dp_outputs()}))
    last = trace.steps[-1] if trace.steps else None
    if last is None:
        return Leg(packet, Outcome.DROPPED, None, "the bridge has no flow table entries at all", ports)
    whose = _whose(last, owners or {})
    if packet.kind is Kind.ARP_REQUEST and (answer := _answered_mac(last)) is not None:
        back = packet.in_port in ports
        why = (f"answered by the switch with {answer}, out port {packet.in_port} "
               f"(table {last.table} ({last.name}) flow {last.match}{whose})" if back else
               f"turned into a reply by table {last.table} ({last.name}) but it leaves by {_ports(ports)}")
        return Leg(packet, Outcome.ANSWERED if back else Outcome.ELSEWHERE, last, why, ports, answer)
    if not ports:
        return Leg(packet, Outcome.DROPPED, last, f"dropped at table {last.table} ({last.name}) by "
                   f"{_by(last)}: {_drop_reason(last, packet)}", ports)
    if packet.expect_port in ports:
        return Leg(packet, Outcome.DELIVERED, last, _delivered(last, packet, ports, whose), ports)
    return Leg(packet, Outcome.ELSEWHERE, last, f"leaves by {_ports(ports)}, not port {packet.expect_port} "
               f"(table {last.table} ({last.name}): {last.rule()})", ports)


def _whose(step: Step, owners: Mapping[int, str]) -> str:
    """`: forward for default/web-0` for a flow whose cookie names an owner, else ""."""
    if step.cookie is None:
        return ""
    decoded = cookies.decode(step.cookie)
    return f": {decoded.describe(owners)}" if decoded.owner_id else ""


def _by(step: Step) -> str:
    """The flow that decided, as a sentence names it: `its miss flow (priority=0 actions=drop)`."""
    if step.match is None:
        return "no flow"
    return f"its miss flow ({step.rule()})" if step.match == "" and step.priority == 0 else f"flow {step.rule()}"


def _answered_mac(step: Step) -> str | None:
    """The MAC an ARP responder flow puts in its reply, if `step` is one (op 2, out IN_PORT)."""
    if "IN_PORT" not in step.actions or "set_field:2->arp_op" not in step.actions:
        return None
    return next((action.split(":", 1)[1].split("->")[0] for action in step.actions
                 if action.startswith("set_field:") and action.endswith("->arp_sha")), None)


def _delivered(last: Step, packet: Packet, ports: tuple[int, ...], whose: str) -> str:
    normal = "NORMAL" in last.actions
    if not normal:
        return f"reaches port {packet.expect_port} (table {last.table} ({last.name}) flow {last.match}{whose})"
    flooded = any("flooding" in note for note in last.notes) or len(ports) > 1
    how = f"flooded to ports {_ports(ports)}" if flooded else "forwarded by NORMAL (MAC learning)"
    if packet.kind is Kind.ARP_REQUEST:
        return (f"reaches port {packet.expect_port}, {how}: the responder has no flow for {packet.dst_ip}, "
                "so the switch does not answer and the pod must answer itself")
    if not packet.placed_dst or last.name != L2:
        return f"reaches port {packet.expect_port}, {how}"
    return f"reaches port {packet.expect_port}, {how}: no l2 flow forwards {packet.dst_mac} to its port"


def _drop_reason(step: Step, packet: Packet) -> str:
    """Why a packet dropped at `step` was dropped, in the pipeline's terms."""
    if step.name == INGRESS:
        return f"no port-security flow admits {packet.src_ip} ({packet.src_mac}) from port {packet.in_port}"
    if step.match is None:
        return f"table {step.table} has no flow that matches it, and no miss flow"
    if step.name == L2:
        return f"no l2 flow forwards {packet.dst_mac}, and the switch drops unknown destinations"
    if step.name == RESPONDER:
        return f"the responder drops it (no flow for {packet.dst_ip} lets it on)"
    return "that flow drops it"



def _ports(ports: tuple[int, ...]) -> str:
    return ", ".join(_port(p) for p in ports) or "no port"


def _port(port: int) -> str:
    if port < 0:
        return f"datapath port {-port}"
    return "LOCAL" if port == LOCAL else str(port)


LOCAL = 0xFFFE  # the bridge's own internal port (OFPP_LOCAL)


def verdict(legs: tuple[Leg, ...], *, mac: str, from_port: int) -> tuple[bool, str]:
    """(reachable?, one line) from the legs of one trace: the ARP request (and, when the switch
    did not answer it, the pod's own reply), the IPv4 packet to the pod, and the pod's IPv4 reply.
    Reachable needs an ARP answer carrying `mac` and both IPv4 packets delivered."""
    for leg in legs:
        if leg.outcome is Outcome.ANSWERED and (leg.answered_mac or "").lower() != mac.lower():
            return False, (f"unreachable from port {from_port}: ARP for {leg.packet.dst_ip} is answered with "
                           f"{leg.answered_mac}, not {mac.lower()} ({leg.where()})")
        if not leg.ok:
            return False, f"unreachable from port {from_port}: {leg.line()}"
    arp = "ARP answered by the switch" if legs and legs[0].outcome is Outcome.ANSWERED else "ARP answered by the pod"
    return True, f"reachable from port {from_port}: {arp}, IPv4 there and back"
