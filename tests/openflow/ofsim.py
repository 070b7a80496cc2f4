"""A packet walk over a flow set: which flow wins in each table and what leaves the switch.

Test utility. It follows OpenFlow 1.3 semantics for what the pipeline uses (exact and masked
matches, apply-actions in order, goto-table, output to IN_PORT, no output back to the in-port, learn
as a record of the flow it would add) and
refuses ambiguity: two matching flows of equal top priority fail the walk, since OVS would pick
either.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openflow.flows import CONTROLLER, IN_PORT, NO_MAC, NORMAL, Flow, Learn, Move, Output, PopVlan, PushVlan, Resubmit, SetField
from openflow.tables import INGRESS

Frame = dict[str, object]


@dataclass(frozen=True)
class Emitted:
    port: int | str  # a port number, "NORMAL" or "CONTROLLER"
    frame: Frame
    max_len: int = 0


@dataclass(frozen=True)
class Walk:
    path: tuple[Flow, ...]
    emitted: tuple[Emitted, ...]
    learned: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # (table, match) a learn action added

    @property
    def dropped(self) -> bool:
        return not self.emitted

    @property
    def only(self) -> Emitted:
        assert len(self.emitted) == 1, f"expected one output, got {self.emitted}"
        return self.emitted[0]

    def is_output(self, port: int | str) -> bool:
        return [emitted.port for emitted in self.emitted] == [port]


def walk(flows: Iterable[Flow], frame: Mapping[str, object], *, in_port: int) -> Walk:
    tables: dict[str, list[Flow]] = {}
    for flow in flows:
        tables.setdefault(flow.table, []).append(flow)
    fields: Frame = {**frame, "in_port": in_port}
    path: list[Flow] = []
    emitted: list[Emitted] = []
    learned: list[tuple[str, tuple[tuple[str, object], ...]]] = []

    def run(table: str | None) -> None:
        while table is not None:
            won = winner(tables.get(table, []), fields)
            if won is None:
                break  # a table miss without a miss flow: OpenFlow 1.3 drops
            path.append(won)
            for action in won.actions:
                if isinstance(action, Learn):
                    learned.append((action.table, (*action.values, *((name, fields[name]) for name in action.copy))))
                elif isinstance(action, Resubmit):
                    run(action.table)
                else:
                    _act(action, fields, emitted, in_port)
            table = won.goto

    run(INGRESS)
    return Walk(tuple(path), tuple(emitted), tuple(learned))


def winner(flows: list[Flow], fields: Mapping[str, object]) -> Flow | None:
    matching = [flow for flow in flows if matches(flow, fields)]
    if not matching:
        return None
    top = max(flow.priority for flow in matching)
    best = [flow for flow in matching if flow.priority == top]
    assert len(best) == 1, f"ambiguous: {len(best)} flows of priority {top} match {fields}: {best}"
    return best[0]


def matches(flow: Flow, fields: Mapping[str, object]) -> bool:
    for name, want in flow.match:
        if name not in fields:
            return False
        value, mask = want if isinstance(want, tuple) else (want, None)
        have, value_bits = _bits(fields[name]), _bits(value)
        mask_bits = ~0 if mask is None else _bits(mask)
        if have & mask_bits != value_bits & mask_bits:
            return False
    return True


def _act(action: object, fields: Frame, emitted: list[Emitted], in_port: int) -> None:
    if isinstance(action, SetField):
        fields[action.field] = action.value
    elif isinstance(action, Move):
        assert action.src_ofs == action.dst_ofs == 0, "partial moves are not simulated"
        fields[action.dst] = fields[action.src]
    elif isinstance(action, PopVlan):  # the inner tag (`vlan_vid1`, as OVS parses two) becomes the outer one
        fields["vlan_vid"] = fields.pop("vlan_vid1", 0)
    elif isinstance(action, PushVlan):
        if fields.get("vlan_vid"):
            fields["vlan_vid1"] = fields["vlan_vid"]
        fields["vlan_vid"] = 0x1000
    elif isinstance(action, Output):
        names: dict[int, int | str] = {IN_PORT: in_port, NORMAL: "NORMAL", CONTROLLER: "CONTROLLER"}
        port = names.get(action.port, action.port)
        if action.port != IN_PORT and port == in_port:
            return  # OpenFlow never sends a frame back out of its in-port unless told IN_PORT
        frame = {name: value for name, value in fields.items() if name != "in_port"}
        emitted.append(Emitted(port, frame, action.max_len))
    else:
        raise AssertionError(f"the simulator does not know {action!r}")


def _bits(value: object) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    try:
        return int(ipaddress.ip_address(text))
    except ValueError:
        return int(text.replace(":", ""), 16)  # a MAC


# frames -----------------------------------------------------------------------------------------
# Untagged unless said otherwise: `vlan_vid` as OpenFlow 1.3 sees it, OFPVID_NONE (0) for no tag,
# 0x1000 | VID for a tagged frame (0x1000 alone: a priority tag).
BROADCAST = "ff:ff:ff:ff:ff:ff"


def arp_request(*, src: str, spa: str, tpa: str, dst: str = BROADCAST, sha: str | None = None) -> Frame:
    return {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x0806, "arp_op": 1, "arp_spa": spa,
            "arp_sha": sha or src, "arp_tpa": tpa, "arp_tha": "00:00:00:00:00:00"}


def ipv4(*, src: str, dst: str, ip_src: str, ip_dst: str) -> Frame:
    return {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x0800, "ipv4_src": ip_src, "ipv4_dst": ip_dst}


def ipv6(*, src: str, dst: str, ip_src: str | None = None, ip_dst: str | None = None, proto: int = 17) -> Frame:
    """An IPv6 frame (UDP unless `proto` says otherwise); without addresses, one that names none."""
    frame: Frame = {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x86DD}
    if ip_src is not None:
        frame.update(ip_proto=proto, ipv6_src=ip_src, ipv6_dst=ip_dst)
    return frame


def icmpv6(*, src: str, dst: str, ip_src: str, ip_dst: str, kind: int, **fields: object) -> Frame:
    """An ICMPv6 message of type `kind`; `fields` are its ND fields as OpenFlow reads them."""
    return {**ipv6(src=src, dst=dst, ip_src=ip_src, ip_dst=ip_dst, proto=58), "icmpv6_type": kind,
            "icmpv6_code": 0, **fields}


def solicited_node(ip: str) -> tuple[str, str]:
    """The solicited-node multicast group of `ip` (RFC 4291 §2.7.1) and its MAC (RFC 2464 §7)."""
    low = int(ipaddress.IPv6Address(ip)) & 0xFFFFFF
    group = ipaddress.IPv6Address((0xFF02 << 112) | (0x1FF << 24) | low)
    return str(group), "33:33:" + ":".join(f"{b:02x}" for b in group.packed[-4:])


def neighbor_solicitation(*, src: str, ip_src: str, target: str, sll: str | None = None,
                          dst: str | None = None) -> Frame:
    """A solicitation for `target`: to its solicited-node group unless `dst` (a MAC) makes it unicast;
    carrying `src` as source link-layer address unless `sll` says otherwise (or the source is ::)."""
    group, group_mac = solicited_node(target)
    no_option = ip_src == "::"
    return icmpv6(src=src, dst=dst or group_mac, ip_src=ip_src, ip_dst=target if dst else group, kind=135,
                  ipv6_nd_target=target, ipv6_nd_sll=NO_MAC if no_option else (sll or src), ipv6_nd_tll=NO_MAC,
                  nd_reserved=0, nd_options_type=0 if no_option else 1)


def neighbor_advertisement(*, src: str, ip_src: str, target: str, tll: str | None = None,
                           dst: str = "33:33:00:00:00:01", ip_dst: str = "ff02::1") -> Frame:
    """An (unsolicited, to all nodes unless told) advertisement of `target` at `tll` (default `src`)."""
    return icmpv6(src=src, dst=dst, ip_src=ip_src, ip_dst=ip_dst, kind=136, ipv6_nd_target=target,
                  ipv6_nd_sll=NO_MAC, ipv6_nd_tll=tll or src, nd_reserved=0x20000000, nd_options_type=2)


def tagged(frame: Frame, vid: int) -> Frame:
    """`frame` with an 802.1Q tag of `vid` (0: a priority tag), as OpenFlow's `vlan_vid` shows it."""
    return {**frame, "vlan_vid": 0x1000 | vid}


def double_tagged(frame: Frame, outer: int, inner: int) -> Frame:
    """`frame` with two tags, as Open vSwitch parses them with `vlan-limit` 2 (or 0): OpenFlow's
    `vlan_vid` sees the outer one only, and `eth_type` is the payload's."""
    return {**frame, "vlan_vid": 0x1000 | outer, "vlan_vid1": 0x1000 | inner}
