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

from openflow.flows import CONTROLLER, IN_PORT, NORMAL, Flow, Learn, Move, Output, SetField
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
    table: str | None = INGRESS
    while table is not None:
        won = winner(tables.get(table, []), fields)
        if won is None:
            break  # a table miss without a miss flow: OpenFlow 1.3 drops
        path.append(won)
        for action in won.actions:
            if isinstance(action, Learn):
                learned.append((action.table, (*action.values, *((name, fields[name]) for name in action.copy))))
            else:
                _act(action, fields, emitted, in_port)
        table = won.goto
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
    if ":" in text:
        return int(text.replace(":", ""), 16)
    return int(ipaddress.IPv4Address(text))


# frames -----------------------------------------------------------------------------------------
# Untagged unless said otherwise: `vlan_vid` as OpenFlow 1.3 sees it, OFPVID_NONE (0) for no tag,
# 0x1000 | VID for a tagged frame (0x1000 alone: a priority tag).
BROADCAST = "ff:ff:ff:ff:ff:ff"


def arp_request(*, src: str, spa: str, tpa: str, dst: str = BROADCAST, sha: str | None = None) -> Frame:
    return {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x0806, "arp_op": 1, "arp_spa": spa,
            "arp_sha": sha or src, "arp_tpa": tpa, "arp_tha": "00:00:00:00:00:00"}


def ipv4(*, src: str, dst: str, ip_src: str, ip_dst: str) -> Frame:
    return {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x0800, "ipv4_src": ip_src, "ipv4_dst": ip_dst}


def ipv6(*, src: str, dst: str) -> Frame:
    return {"eth_src": src, "eth_dst": dst, "vlan_vid": 0, "eth_type": 0x86DD}


def tagged(frame: Frame, vid: int) -> Frame:
    """`frame` with an 802.1Q tag of `vid` (0: a priority tag), as OpenFlow's `vlan_vid` shows it."""
    return {**frame, "vlan_vid": 0x1000 | vid}
