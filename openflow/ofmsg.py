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

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp13
from os_ken.ofproto.ofproto_protocol import ProtocolDesc
from os_ken.ofproto import ofproto_v1_3_parser as parser13

from openflow import COOKIE_MASK, encode
from openflow.flows import Action, Flow, Move, Opaque, Output, SetField, make_match
from openflow.tables import table_id, table_name

NXM_SUFFIX = "_nxm"
_OF13 = ProtocolDesc(ofp13.OFP_VERSION)
# ofp_header, experimenter id and type, then bundle_id, pad, flags (os-ken's ONF_BUNDLE_ADD_MSG_PACK_STR)
_BUNDLE_ADD_HEADER = struct.Struct("!BBHIIIIHH")
# ofp_header, experimenter id and type, then bundle_id, type, flags (ONF_BUNDLE_CTRL_PACK_STR), no properties
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")
_HEADER = struct.Struct("!BBHI")


def flow_mod(datapath: Any, flow: Flow, *, delete: bool = False) -> Any:
    """An OFPFlowMod adding `flow`, or deleting exactly it (delete-strict, our cookie only).

    `datapath` is an os-ken Datapath or anything with `.ofproto` and `.ofproto_parser`
    (e.g. `os_ken.ofproto.ofproto_protocol.ProtocolDesc(0x04)`).
    """
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowMod(
        datapath,
        cookie=flow.cookie,
        cookie_mask=COOKIE_MASK if delete else 0,
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
    """A request for every flow, in all tables, carrying exactly `cookie`."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowStatsRequest(
        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, COOKIE_MASK, parser.OFPMatch())


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
    return Opaque(str(action))


def _oxm_name(name: str) -> str:
    """The OpenFlow basic name of a field OVS wrote as its Nicira (NXM) twin: same bits, same meaning."""
    return name[: -len(NXM_SUFFIX)] if name.endswith(NXM_SUFFIX) else name


def _lower_mac(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
