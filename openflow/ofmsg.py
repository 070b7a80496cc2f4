"""Flows ↔ os-ken OpenFlow 1.3 message objects. Builds and parses; never sends.

`flow_mod` and `parse_flow_stats` are inverses on everything `pipeline` produces: what we send is
read back from Open vSwitch as an equal `Flow`. Where OVS answers in a different but equivalent
spelling we normalise on parsing (OVS encodes a move's fields as Nicira NXM headers, os-ken names them
"eth_src_nxm"); instruction order and unknown content are handled by reading instructions by type.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from os_ken.lib import type_desc
from os_ken.ofproto import ofproto_common, oxm_fields
from os_ken.ofproto import ofproto_v1_3 as ofp13
from os_ken.ofproto.ofproto_protocol import ProtocolDesc
from os_ken.ofproto import ofproto_v1_3_parser as parser13

from openflow import cookies, encode
from openflow.encode import OFPXMC_ERICSSON, OXM_CLASSES, OXM_FIELDS
from openflow.flows import ETH_TYPE_ARP, ETH_TYPE_IPV6, Action, Flow, Learn, Move, Opaque, Output, SetField, make_match
from openflow.pipeline import seen_cookie
from openflow.tables import SEEN, table_id, table_name

NXM_SUFFIX = "_nxm"
# Nicira (NXM) names os-ken gives fields whose OpenFlow basic twin is named otherwise
_NXM_TWINS = {"nd_target": "ipv6_nd_target", "nd_sll": "ipv6_nd_sll", "nd_tll": "ipv6_nd_tll"}
_OF13 = ProtocolDesc(ofp13.OFP_VERSION)
# ofp_header, experimenter id and type, then bundle_id, pad, flags (os-ken's ONF_BUNDLE_ADD_MSG_PACK_STR)
_BUNDLE_ADD_HEADER = struct.Struct("!BBHIIIIHH")
# ofp_header, experimenter id and type, then bundle_id, type, flags (ONF_BUNDLE_CTRL_PACK_STR), no properties
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")
_HEADER = struct.Struct("!BBHI")


class _EricssonOxm(oxm_fields._OxmClass):  # type: ignore[misc]  # os-ken is untyped
    _class = OFPXMC_ERICSSON


def _teach_os_ken() -> None:
    """Register the OXM fields Open vSwitch has and os-ken lacks (the ND flags and option type the
    responder sets), so os-ken builds them and parses them in the flow stats a switch sends back.
    Idempotent: os-ken regenerates its field tables from the list."""
    known = {field.name for field in ofp13.oxm_types}
    widths = {1: type_desc.Int1, 4: type_desc.Int4}
    new = [_EricssonOxm(name, OXM_FIELDS[name][0], widths[OXM_FIELDS[name][1]])
           for name, oxm_class in OXM_CLASSES.items() if oxm_class == OFPXMC_ERICSSON and name not in known]
    if new:
        ofp13.oxm_types.extend(new)
        oxm_fields.generate(ofp13.__name__)


_teach_os_ken()


def flow_mod(datapath: Any, flow: Flow, *, delete: bool = False) -> Any:
    """An OFPFlowMod adding `flow`, or deleting exactly it (delete-strict, under our tag only).

    `datapath` is an os-ken Datapath or anything with `.ofproto` and `.ofproto_parser`
    (e.g. `os_ken.ofproto.ofproto_protocol.ProtocolDesc(0x04)`).
    """
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowMod(
        datapath,
        cookie=flow.cookie,
        cookie_mask=cookies.TAG_MASK if delete else 0,
        table_id=table_id(flow.table),
        command=ofp.OFPFC_DELETE_STRICT if delete else ofp.OFPFC_ADD,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=0,
        match=parser.OFPMatch(**dict(flow.match)),
        instructions=[] if delete else _instructions(datapath, flow),
    )


def flow_mod_bytes(flow: Flow, delete: bool = False) -> bytes:
    """`flow_mod` as bytes (xid 0): by the fast encoder, or by os-ken for what only it knows (a flow
    read from a switch with a match field the pipeline never writes, about to be deleted)."""
    try:
        return encode.flow_mod(flow, delete=delete)
    except encode.Unencodable:
        msg = flow_mod(_OF13, flow, delete=delete)
        msg.xid = 0
        msg.serialize()
        return bytes(msg.buf)


def bundle_bytes(messages: Iterable[bytes], *, bundle_id: int, flags: int, first_xid: int) -> tuple[bytes, int]:
    """ONF bundle-add messages (EXT-230) around pre-encoded messages, numbered from `first_xid`;
    each inner message carries its bundle-add's xid, as the extension asks. Returns (bytes, next xid)."""
    out = bytearray()
    xid = first_xid
    for inner in messages:
        length = _BUNDLE_ADD_HEADER.size + len(inner)
        out += _BUNDLE_ADD_HEADER.pack(ofp13.OFP_VERSION, ofp13.OFPT_EXPERIMENTER, length, xid,
                                       ofproto_common.ONF_EXPERIMENTER_ID, ofp13.ONF_ET_BUNDLE_ADD_MESSAGE,
                                       bundle_id, 0, flags)
        out += inner[:4] + struct.pack("!I", xid) + inner[8:]
        xid = (xid + 1) & ofp13.MAX_XID
    return bytes(out), xid


def bundle_transaction(mods: list[bytes], *, bundle_id: int, flags: int, first_xid: int) -> bytes:
    """One atomic change as one buffer: bundle open, the mods added to it, commit, then a barrier.
    xids are consecutive from `first_xid`: open, each mod, commit, barrier (`len(mods) + 3` in all)."""
    xid = first_xid
    out = bytearray(_bundle_ctrl(ofp13.ONF_BCT_OPEN_REQUEST, bundle_id, flags, xid))
    adds, xid = bundle_bytes(mods, bundle_id=bundle_id, flags=flags, first_xid=xid + 1)
    out += adds
    out += _bundle_ctrl(ofp13.ONF_BCT_COMMIT_REQUEST, bundle_id, flags, xid)
    out += _HEADER.pack(ofp13.OFP_VERSION, ofp13.OFPT_BARRIER_REQUEST, _HEADER.size, (xid + 1) & ofp13.MAX_XID)
    return bytes(out)


def _bundle_ctrl(kind: int, bundle_id: int, flags: int, xid: int) -> bytes:
    return _BUNDLE_CTRL.pack(ofp13.OFP_VERSION, ofp13.OFPT_EXPERIMENTER, _BUNDLE_CTRL.size, xid,
                             ofproto_common.ONF_EXPERIMENTER_ID, ofp13.ONF_ET_BUNDLE_CONTROL, bundle_id, kind, flags)


def flow_stats_request(datapath: Any, cookie: int) -> Any:
    """A request for every flow, in all tables, carrying the tag of `cookie` (whatever purpose and
    owner: also flows an older version wrote with the bare configured cookie)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowStatsRequest(
        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookies.tag_of(cookie), cookies.TAG_MASK,
        parser.OFPMatch())


def aggregate_request(datapath: Any, cookie: int, *, table: str) -> Any:
    """How many flows `flow_stats_request` would read in `table` (OFPMP_AGGREGATE: a count, no
    flows): the drift audit's cheap look (controller/switch.py)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    like = flow_stats_request(datapath, cookie)
    return parser.OFPAggregateStatsRequest(datapath, 0, table_id(table), ofp.OFPP_ANY, ofp.OFPG_ANY, like.cookie,
                                           like.cookie_mask, parser.OFPMatch())


def role_request(datapath: Any, *, master: bool | None, generation: int = 0) -> Any:
    """OFPT_ROLE_REQUEST for MASTER or SLAVE with a generation id (an unsigned 64-bit counter the
    switch compares, wrapping, against the largest it has seen: a smaller one is refused as stale);
    `master=None` changes nothing and asks for the switch's largest generation id in the reply."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    role = ofp.OFPCR_ROLE_NOCHANGE if master is None else ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
    return parser.OFPRoleRequest(datapath, role, generation & 0xFFFF_FFFF_FFFF_FFFF)


def seen_request(datapath: Any, cookie: int, *, mac: str | None = None, ip: str | None = None) -> Any:
    """A request for the `seen` records (see openflow.pipeline) of one source MAC, or of one ARP
    (or, for an IPv6 `ip`, ND) sender IP, on a switch whose controller cookie is `cookie`."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    if mac is not None:
        match = parser.OFPMatch(eth_src=mac)
    elif ip is not None and ":" in ip:
        match = parser.OFPMatch(eth_type=ETH_TYPE_IPV6, ipv6_src=ip)
    else:
        match = parser.OFPMatch(eth_type=ETH_TYPE_ARP, arp_spa=ip)
    return parser.OFPFlowStatsRequest(
        datapath, 0, table_id(SEEN), ofp.OFPP_ANY, ofp.OFPG_ANY, seen_cookie(cookie), cookies.TAG_MASK, match)


def parse_seen_ports(stats: Iterable[Any]) -> tuple[int, ...]:
    """The ports of the `seen` records in a flow-stats reply's entries."""
    return tuple(sorted({entry.match["in_port"] for entry in stats if "in_port" in entry.match}))


def parse_flow_stats(stats: Iterable[Any]) -> frozenset[Flow]:
    """The entries of OFPFlowStatsReply bodies (OFPFlowStats) as `Flow` values."""
    return frozenset(_parse_one(entry) for entry in stats)


def _instructions(datapath: Any, flow: Flow) -> list[Any]:
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    instructions = []
    if flow.actions:
        actions = [_encode_action(parser, action) for action in flow.actions]
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if flow.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(table_id(flow.goto)))
    return instructions


def _encode_action(parser: Any, action: Action) -> Any:
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, action.max_len)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst, n_bits=action.n_bits,
                                      src_ofs=action.src_ofs, dst_ofs=action.dst_ofs)
    if isinstance(action, Learn):
        specs = [parser.NXFlowSpecMatch(src=value, dst=(name, 0), n_bits=OXM_FIELDS[name][1] * 8)
                 for name, value in action.values]
        specs += [parser.NXFlowSpecMatch(src=(name, 0), dst=(name, 0), n_bits=OXM_FIELDS[name][1] * 8)
                  for name in action.copy]
        return parser.NXActionLearn(table_id=table_id(action.table), specs=specs, hard_timeout=action.hard_timeout,
                                    priority=action.priority, cookie=action.cookie, flags=action.flags)
    raise ValueError(f"cannot send {action}: it was read from a switch, not built by the pipeline")


def _parse_one(entry: Any) -> Flow:
    actions: list[Action] = []
    goto = None
    for instruction in entry.instructions:
        if isinstance(instruction, parser13.OFPInstructionGotoTable):
            goto = table_name(instruction.table_id)
        elif isinstance(instruction, parser13.OFPInstructionActions) and instruction.type == ofp13.OFPIT_APPLY_ACTIONS:
            actions.extend(_parse_action(action) for action in instruction.actions)
        else:
            actions.append(Opaque(str(instruction)))
    return Flow(table=table_name(entry.table_id), priority=entry.priority,
                match=make_match(dict(entry.match.items())), actions=tuple(actions), goto=goto,
                cookie=entry.cookie)


def _parse_action(action: Any) -> Action:
    if isinstance(action, parser13.OFPActionOutput):
        return Output(action.port, action.max_len)
    if isinstance(action, parser13.OFPActionSetField):
        return SetField(action.key, _lower_mac(action.value))
    if isinstance(action, parser13.NXActionRegMove):
        return Move(_oxm_name(action.src_field), _oxm_name(action.dst_field), action.n_bits,
                    action.src_ofs, action.dst_ofs)
    if isinstance(action, parser13.NXActionLearn):
        return _parse_learn(action)
    return Opaque(str(action))


def _parse_learn(action: Any) -> Action:
    """A learn the pipeline writes (match specs only: whole-field values, then whole-field copies)
    as a `Learn`; any other learn stays Opaque, so `diff` replaces it."""
    values: list[tuple[str, int]] = []
    copy: list[str] = []
    for spec in action.specs:
        dst = spec.dst
        if not isinstance(spec, parser13.NXFlowSpecMatch) or not isinstance(dst, tuple) or dst[1]:
            return Opaque(str(action))
        name = _oxm_name(dst[0])
        if name not in OXM_FIELDS or spec.n_bits != OXM_FIELDS[name][1] * 8:
            return Opaque(str(action))
        if isinstance(spec.src, int) and not copy:
            values.append((name, spec.src))
        elif isinstance(spec.src, tuple) and _oxm_name(spec.src[0]) == name and not spec.src[1]:
            copy.append(name)
        else:
            return Opaque(str(action))
    if action.idle_timeout or action.fin_idle_timeout or action.fin_hard_timeout:
        return Opaque(str(action))
    return Learn(table_name(action.table_id), tuple(copy), action.cookie, action.hard_timeout, tuple(values),
                 action.priority, action.flags)


def _oxm_name(name: str) -> str:
    """The OpenFlow basic name of a field OVS wrote as its Nicira (NXM) twin: same bits, same meaning."""
    if name in _NXM_TWINS:
        return _NXM_TWINS[name]
    return name[: -len(NXM_SUFFIX)] if name.endswith(NXM_SUFFIX) else name


def _lower_mac(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
