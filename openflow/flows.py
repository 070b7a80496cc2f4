"""Flows as frozen, hashable values: the one type for both "what we want" and "what the switch has".

A `Flow` is what OpenFlow 1.3 identifies (table, priority, match) plus what we put in it (apply-actions,
goto-table, cookie). Matches are kept in one canonical form (a tuple of (field, value) pairs in a fixed
field order, MACs lower-case, IPv6 addresses compressed, prerequisites spelled out) that equals what
`ofmsg.parse_flow_stats` reads back from Open vSwitch, so two flow sets compare exactly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from os_ken.ofproto import ofproto_v1_3 as ofp

from openflow.tables import table_id

IN_PORT = ofp.OFPP_IN_PORT
NORMAL = ofp.OFPP_NORMAL
CONTROLLER = ofp.OFPP_CONTROLLER
PORT_NAMES = {IN_PORT: "IN_PORT", NORMAL: "NORMAL", CONTROLLER: "CONTROLLER", ofp.OFPP_FLOOD: "FLOOD",
              ofp.OFPP_ALL: "ALL", ofp.OFPP_LOCAL: "LOCAL"}

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ARP_REQUEST = 1
ARP_REPLY = 2
IPPROTO_ICMPV6 = 58
# ICMPv6 types (RFC 4443, 4861, 2710, 3810)
MLD_REPORT, MLD_DONE, MLD2_REPORT = 131, 132, 143
ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT = 133, 134
NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT, REDIRECT = 135, 136, 137
ND_OPT_TARGET_LL = 2  # the Target Link-Layer Address option (RFC 4861 §4.6.1)
UNSPECIFIED_IPV6 = "::"
NO_MAC = "00:00:00:00:00:00"  # an ND message without a link-layer option, as OpenFlow reads it
OFPVID_NONE = 0x0000     # vlan_vid of a frame without an 802.1Q/802.1ad tag (OpenFlow 1.3 §7.2.3.7)
OFPVID_PRESENT = 0x1000  # or'ed into a VID: a frame tagged with that VID
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # the group bit: broadcast and multicast

MatchValue = Union[int, str, tuple[str, str], tuple[int, int]]  # a value, or (value, mask)
Match = tuple[tuple[str, MatchValue], ...]

# Canonical field order (how a human reads a flow); fields not listed sort after, by name.
FIELD_ORDER = ("in_port", "eth_src", "eth_dst", "vlan_vid", "eth_type", "arp_op", "arp_spa", "arp_sha", "arp_tpa",
               "arp_tha", "ipv4_src", "ipv4_dst", "ip_proto", "ipv6_src", "ipv6_dst", "icmpv6_type", "icmpv6_code",
               "ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll")
_FIELD_RANK = {name: rank for rank, name in enumerate(FIELD_ORDER)}
_MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"})
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "ipv6_nd_target"})


@dataclass(frozen=True)
class Output:
    """Output to a port; `max_len` is sent and read back as is (0 except towards the controller)."""

    port: int
    max_len: int = 0

    def __str__(self) -> str:
        name = PORT_NAMES.get(self.port, f"output:{self.port}")
        return f"{name}:{self.max_len}" if self.max_len else name


@dataclass(frozen=True)
class SetField:
    field: str
    value: int | str

    def __str__(self) -> str:
        return f"set_field:{self.value}->{self.field}"


@dataclass(frozen=True)
class Move:
    """Copy `n_bits` of `src` into `dst` (Nicira reg_move: what OVS uses for OpenFlow 1.3)."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0

    def __str__(self) -> str:
        return f"move:{self.src}->{self.dst}"


@dataclass(frozen=True)
class Learn:
    """Nicira learn: add (or refresh) a flow in `table` that matches `values` (fixed, e.g. the
    eth_type a field needs) and the frame's own value of each field in `copy`, and does nothing: a
    record that such a frame was seen.

    OVS refreshes a learned flow each time the learn action runs again for it, so `hard_timeout`
    counts from the last frame, not the first. Learned flows carry their own `cookie`, never the
    controller's: reconciliation neither reads nor deletes them. `flags` are NX_LEARN_F_*."""

    table: str
    copy: tuple[str, ...]
    cookie: int
    hard_timeout: int = 0
    values: tuple[tuple[str, int], ...] = ()
    priority: int = 0
    flags: int = 0

    def __str__(self) -> str:
        specs = [f"{name}={value:#x}" for name, value in self.values] + list(self.copy)
        return f"learn(table={self.table},hard_timeout={self.hard_timeout},{','.join(specs)})"


@dataclass(frozen=True)
class PopVlan:
    """Take the outermost VLAN tag off."""

    def __str__(self) -> str:
        return "pop_vlan"


@dataclass(frozen=True)
class PushVlan:
    """Put a new outermost VLAN tag on (its VID set by a following SetField of `vlan_vid`)."""

    ethertype: int = 0x8100

    def __str__(self) -> str:
        return f"push_vlan:{self.ethertype:#06x}"


@dataclass(frozen=True)
class Resubmit:
    """Nicira resubmit: look the packet (as the actions so far left it) up in `table` too, then go on;
    unlike goto-table, any table, also one of a lower id."""

    table: str

    def __str__(self) -> str:
        return f"resubmit(,{self.table})"


@dataclass(frozen=True)
class Opaque:
    """An action or instruction we never write, found on a switch under our cookie.

    Keeping it (as text) makes that flow differ from every desired flow, so `diff` replaces it.
    """

    text: str

    def __str__(self) -> str:
        return f"opaque({self.text})"


Action = Union[Output, SetField, Move, Learn, PopVlan, PushVlan, Resubmit, Opaque]


@dataclass(frozen=True)
class Flow:
    table: str
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()  # apply-actions; () with no goto means drop
    goto: str | None = None
    cookie: int = 0
    # Flows live in sets of tens of thousands that are rebuilt and diffed on every convergence:
    # hash once, not on every insertion.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.table, self.priority, self.match, self.actions, self.goto,
                                                self.cookie)))

    def __hash__(self) -> int:
        return self._hash

    def with_cookie(self, cookie: int) -> Flow:
        """This flow under `cookie` (what `dataclasses.replace` does, without its cost per field)."""
        return Flow(self.table, self.priority, self.match, self.actions, self.goto, cookie)

    @property
    def key(self) -> tuple[str, int, Match]:
        """What a strict flow-mod names: an add with the same key replaces this flow."""
        return (self.table, self.priority, self.match)

    def pipeline_order(self) -> tuple[int, int]:
        """Table order, then highest priority first: the order of make-before-break adds."""
        return (table_id(self.table), -self.priority)

    def sort_key(self) -> tuple[int, int, str, str, str, int]:
        """`pipeline_order`, then a total order on everything else: for stable listings."""
        return (*self.pipeline_order(), repr(self.match), repr(self.actions), self.goto or "", self.cookie)


def make_match(fields: Mapping[str, MatchValue]) -> Match:
    """The canonical match: fixed field order, lower-case MACs, compressed IPv6 addresses, exact values
    instead of full masks."""
    return tuple(sorted(((name, _normal(name, value)) for name, value in fields.items()), key=_field_key))


def make_flow(table: str, priority: int, match: Mapping[str, MatchValue], *, actions: tuple[Action, ...] = (),
              goto: str | None = None, cookie: int = 0) -> Flow:
    return Flow(table=table, priority=priority, match=make_match(match), actions=actions, goto=goto,
                cookie=cookie)


def sort_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    return tuple(sorted(flows, key=Flow.sort_key))


def _field_key(item: tuple[str, MatchValue]) -> tuple[int, str]:
    name = item[0]
    return (_FIELD_RANK.get(name, len(FIELD_ORDER)), name)


def _normal(name: str, value: MatchValue) -> MatchValue:
    if isinstance(value, tuple):
        masked, mask = (_normal(name, part) for part in value)
        if mask in ("ff:ff:ff:ff:ff:ff", "255.255.255.255"):
            return masked
        return (masked, mask)  # type: ignore[return-value]
    if name in _MAC_FIELDS and isinstance(value, str):
        return value.lower()
    if name in _IPV6_FIELDS and isinstance(value, str):
        return ipaddress.IPv6Address(value).compressed
    return value
