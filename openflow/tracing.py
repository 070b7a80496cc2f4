"""Which flows concern one address, and which packets show whether it is reachable. No I/O.

`underlayctl trace IP|POD` answers "why can't I reach this pod?" in three parts, all decided here
from plain values so they are tested without a switch:

1. `concerning`: of a switch's flows (desired or actual, as `FlowView`s), those that answer ARP/ND
   for the address, let its owner's own requests pass, forward to its MAC, or admit it from its
   port (port security). A flow is picked by what it matches (the address, the MAC, the port),
   never by its cookie, so flows written before the cookie layout are found too.
2. `drift`: those of them the switch lacks or has extra, compared with what the controller wants.
3. `probes`: the packets to hand to `ovs-appctl ofproto/trace` (openflow.ofproto_trace judges the
   answers): an ARP request for the address and an IPv4 packet to it from a chosen port, and the
   pod's answers back, since a pod whose replies are dropped at its port is unreachable too.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openflow.flows import BROADCAST, FIELD_ORDER, Flow, MatchValue
from openflow.model import link_local
from openflow.tables import INGRESS, L2, ND_REPLY, RESPONDER, actions_text

# the fields whose value is an address of the placement (its own, or one it asks about)
_IP_FIELDS = ("arp_spa", "arp_tpa", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ipv6_nd_target")
_TARGET_FIELDS = ("arp_tpa", "ipv6_nd_target")


@dataclass(frozen=True)
class FlowView:
    """One flow as text fields: what both the controller's REST answers and `openflow.flows.Flow`
    turn into, so desired and actual flows compare whatever their source."""

    table: str
    priority: int
    match: tuple[tuple[str, str], ...]  # (field, value) in canonical order; a mask as "value/mask"
    actions: str  # "output:2", "goto_table:l2", "drop"
    cookie: int = 0

    def field(self, name: str) -> str | None:
        return next((value for key, value in self.match if key == name), None)

    def text(self) -> str:
        """`l2 priority=100 eth_dst=02:55:c6:12:00:64 actions=output:2`."""
        match = ",".join(f"{name}={value}" for name, value in self.match) or "*"
        return f"{self.table} priority={self.priority} {match} actions={self.actions}"

    @classmethod
    def from_flow(cls, flow: Flow) -> FlowView:
        return cls(flow.table, flow.priority, tuple((name, match_text(name, value)) for name, value in flow.match),
                   actions_text(flow), flow.cookie)


    @classmethod
    def from_json(cls, flow: Mapping[str, Any]) -> FlowView:
        """A flow as the controller's operator REST answers it (controller/API.md, "Operators")."""
        steps = [str(action) for action in flow.get("actions") or ()]
        if flow.get("goto"):
            steps.append(f"goto_table:{flow['goto']}")
        match = sorted(dict(flow.get("match") or {}).items(), key=lambda item: _field_key(item[0]))
        return cls(str(flow["table"]), int(flow["priority"]), tuple((name, match_text(name, value)) for name, value in match),
                   ",".join(steps) or "drop", int(str(flow.get("cookie") or 0), 0))


def trusted_ports(flows: Iterable[FlowView]) -> tuple[int, ...]:
    """The trusted ports of a switch, read from its flows: each has an ingress flow that matches
    its port alone and passes everything on (openflow.pipeline's trusted-port flow)."""
    return tuple(sorted({port for flow in flows if flow.table == INGRESS and len(flow.match) == 1
                         and (port := _int(flow.field("in_port"))) is not None and flow.actions != "drop"}))


def match_text(name: str, value: MatchValue) -> str:
    """A match value as text: masks as `value/mask`, eth_type and vlan_vid in hex."""
    if isinstance(value, tuple):
        return "/".join(match_text(name, part) for part in value)
    if name in ("eth_type", "vlan_vid") and isinstance(value, int):
        return f"{value:#06x}"
    return str(value)


@dataclass(frozen=True)
class Subject:
    """The placement being traced: its address, the MAC it answers at, its switch port."""

    ip: str
    mac: str
    port: int
    owner: str = ""

    @property
    def name(self) -> str:
        return f"{self.owner} ({self.ip})" if self.owner else self.ip

    @property
    def addresses(self) -> frozenset[str]:
        """Its address, and for IPv6 the link-local one its port may send from too."""
        if ipaddress.ip_address(self.ip).version == 6:
            return frozenset({self.ip, link_local(self.ip)})
        return frozenset({self.ip})


class Role(enum.Enum):
    """What a flow does for the placement, as listings label it."""

    ADMIT = "port security"  # admits its frames from its port
    GUARD = "RA guard"  # drops router advertisements and foreign ND from its port
    OWNER_PASS = "owner pass"  # lets its own requests (DAD, gratuitous ARP) pass unanswered
    ANSWER = "answer"  # answers ARP/ND for it in the datapath
    FORWARD = "forward"  # forwards frames for its MAC to its port


@dataclass(frozen=True)
class Concern:
    role: Role
    flow: FlowView


def concerning(flows: Iterable[FlowView], subject: Subject) -> tuple[Concern, ...]:
    """The flows that make `subject` reachable, each with its role, in pipeline order (ingress,
    responder, l2, nd_reply), highest priority first."""
    found = [Concern(role, flow) for flow in flows if (role := role_of(flow, subject)) is not None]
    order = {INGRESS: 0, RESPONDER: 1, L2: 2, ND_REPLY: 3}
    return tuple(sorted(found, key=lambda c: (order.get(c.flow.table, 9), -c.flow.priority, c.flow.match)))


def role_of(flow: FlowView, subject: Subject) -> Role | None:
    """What `flow` does for `subject`, or None when it does not concern it."""
    addresses = subject.addresses
    if flow.table in (RESPONDER, ND_REPLY):
        if not any(flow.field(name) in addresses for name in _TARGET_FIELDS):
            return None
        return Role.OWNER_PASS if _int(flow.field("in_port")) == subject.port else Role.ANSWER
    if flow.table == L2:
        return Role.FORWARD if (flow.field("eth_dst") or "").lower() == subject.mac.lower() else None
    if flow.table == INGRESS:
        if _int(flow.field("in_port")) != subject.port or (flow.field("eth_src") or "").lower() != subject.mac.lower():
            return None
        named = [flow.field(name) for name in _IP_FIELDS if flow.field(name) is not None]
        if not named:  # a flow for the port and MAC alone: the IPv6 guard every address there shares
            return Role.GUARD
        return Role.ADMIT if addresses & set(named) else None
    return None


@dataclass(frozen=True)
class Drift:
    """The difference, among the flows that concern one subject, between desired and actual."""

    missing: tuple[FlowView, ...]  # desired, not on the switch
    extra: tuple[FlowView, ...]  # on the switch (under our cookie), not desired

    @property
    def in_sync(self) -> bool:
        return not self.missing and not self.extra

    def describe(self, desired_count: int) -> str:
        if self.in_sync:
            return "the switch has every desired flow for it"
        parts = []
        if self.missing:
            parts.append(f"the switch lacks {len(self.missing)} of its {desired_count} desired flows")
        if self.extra:
            parts.append(f"has {len(self.extra)} it should not")
        return " and ".join(parts) + ": the controller will repair it"


def drift(desired: Iterable[Concern], actual: Iterable[Concern]) -> Drift:
    want = {concern.flow for concern in desired}
    have = {concern.flow for concern in actual}
    return Drift(missing=tuple(f for f in _ordered(want) if f not in have),
                 extra=tuple(f for f in _ordered(have) if f not in want))


def _ordered(flows: Iterable[FlowView]) -> list[FlowView]:
    return sorted(flows, key=lambda f: (f.table, -f.priority, f.match, f.actions))


class Kind(enum.Enum):
    ARP_REQUEST = "ARP request"
    ARP_REPLY = "ARP reply"
    IPV4 = "IPv4"


@dataclass(frozen=True)
class Packet:
    """One packet to trace: where it enters, who sends it to whom. Its `ofproto_flow` is the flow
    syntax `ovs-appctl ofproto/trace` takes."""

    kind: Kind
    in_port: int
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str
    expect_port: int  # where it should leave (an ARP request the switch answers leaves by in_port instead)
    placed_dst: bool = False  # the destination is the placement: an exact l2 flow should forward it

    def ofproto_flow(self) -> str:
        head = f"in_port={self.in_port},dl_src={self.src_mac},dl_dst={self.dst_mac}"
        if self.kind is Kind.IPV4:
            return f"{head},ip,nw_src={self.src_ip},nw_dst={self.dst_ip},nw_proto=1,nw_ttl=64"
        op, tha = (1, "00:00:00:00:00:00") if self.kind is Kind.ARP_REQUEST else (2, self.dst_mac)
        return (f"{head},arp,arp_op={op},arp_spa={self.src_ip},arp_sha={self.src_mac},"
                f"arp_tpa={self.dst_ip},arp_tha={tha}")

    def describe(self) -> str:
        """`IPv4 198.18.0.2 -> 198.18.0.100 from port 1`."""
        if self.kind is Kind.ARP_REQUEST:
            return f"ARP who-has {self.dst_ip} from {self.src_ip} on port {self.in_port}"
        return f"{self.kind.value} {self.src_ip} -> {self.dst_ip} from port {self.in_port}"


@dataclass(frozen=True)
class Source:
    """Who sends from the chosen port: an address placed there (a node port admits only those),
    or for a trusted port any host (`default_source`)."""

    port: int
    mac: str
    ip: str


def default_source(port: int, placed: Iterable[Subject] = ()) -> Source:
    """The sender on `port`: the first address placed there (a node's or a pod's, so port security
    admits it), else a made-up host (a trusted port admits anyone): 198.18.255.254 with a locally
    administered MAC that names the port."""
    on_port = sorted((s for s in placed if s.port == port and ipaddress.ip_address(s.ip).version == 4),
                     key=lambda s: ipaddress.ip_address(s.ip))
    if on_port:
        return Source(port, on_port[0].mac.lower(), on_port[0].ip)
    return Source(port, f"02:75:6c:00:{port >> 8 & 0xFF:02x}:{port & 0xFF:02x}", "198.18.255.254")


def probes(subject: Subject, source: Source) -> tuple[Packet, Packet, Packet]:
    """The ARP request for the subject, an IPv4 packet to it and its IPv4 reply, in that order."""
    return (
        Packet(Kind.ARP_REQUEST, source.port, source.mac, source.ip, BROADCAST, subject.ip, subject.port),
        Packet(Kind.IPV4, source.port, source.mac, source.ip, subject.mac.lower(), subject.ip, subject.port,
               placed_dst=True),
        Packet(Kind.IPV4, subject.port, subject.mac.lower(), subject.ip, source.mac, source.ip, source.port),
    )


def pod_arp_reply(subject: Subject, source: Source) -> Packet:
    """The subject's own answer to the request: traced when the switch does not answer for it."""
    return Packet(Kind.ARP_REPLY, subject.port, subject.mac.lower(), subject.ip, source.mac, source.ip, source.port)


def find_subject(query: str, placements: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The placement `query` names: its IP (any spelling of it), or its owner (`default/web-0`, or
    `web-0` when only one namespace has it). Raises LookupError naming what was asked and what to do."""
    rows = list(placements)
    try:
        address = ipaddress.ip_address(query).compressed
    except ValueError:
        address = None
    if address is not None:
        hits = [row for row in rows if _compressed(str(row.get("ip", ""))) == address]
    else:
        hits = [row for row in rows if row.get("owner") == query]
        hits = hits or [row for row in rows if str(row.get("owner", "")).split("/")[-1] == query]
    if not hits:
        raise LookupError(f"{query}: no placement has that {'address' if address else 'name'}; "
                          "`underlayctl pods` lists what the controller placed")
    owners = {str(row.get("owner")) for row in hits}
    if address is None and len(owners) > 1:
        raise LookupError(f"{query}: {len(owners)} placements have that name ({', '.join(sorted(owners))}): "
                          "give namespace/name or the IP")
    # a dual-stack pod: two placements; trace the IPv4 one unless an IPv6 address was asked
    return sorted(hits, key=lambda row: ":" in str(row.get("ip")))[0]


def _compressed(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip).compressed
    except ValueError:
        return None


def _field_key(name: str) -> tuple[int, str]:
    return (FIELD_ORDER.index(name) if name in FIELD_ORDER else len(FIELD_ORDER), name)


def _int(value: str | None) -> int | None:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None
