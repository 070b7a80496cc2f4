"""A fast OpenFlow 1.3 FlowMod encoder for the flows the pipeline builds.

os-ken builds a message object per flow and serialises it field by field through generic
converters: about 0.4 ms a flow-mod here, which made the controller, not the switch, the limit
(Open vSwitch takes ~50k flow-mods/s in a bundle). This encoder packs the same bytes directly with
`struct`, for exactly the match fields and actions the pipeline uses. It must stay byte-identical to
`ofmsg.flow_mod(...).serialize()`: tests/openflow/test_encode.py checks that over generated states,
and anything it does not know (an `Opaque` action, an unlisted field) raises instead of guessing.
"""

from __future__ import annotations

import socket
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp

from openflow.cookies import TAG_MASK
from openflow.flows import Action, Flow, Learn, MatchValue, Move, Output, SetField
from openflow.tables import table_id

OFPXMC_ERICSSON = 0x1000  # the OXM class of Open vSwitch's ERICOXM_OF_* fields (os-ken lacks them)
# OXM fields: name -> (field number, value width in bytes); in the basic class unless OXM_CLASSES says
OXM_FIELDS = {
    "in_port": (ofp.OFPXMT_OFB_IN_PORT, 4),
    "eth_dst": (ofp.OFPXMT_OFB_ETH_DST, 6),
    "eth_src": (ofp.OFPXMT_OFB_ETH_SRC, 6),
    "eth_type": (ofp.OFPXMT_OFB_ETH_TYPE, 2),
    "vlan_vid": (ofp.OFPXMT_OFB_VLAN_VID, 2),
    "ipv4_src": (ofp.OFPXMT_OFB_IPV4_SRC, 4),
    "ipv4_dst": (ofp.OFPXMT_OFB_IPV4_DST, 4),
    "arp_op": (ofp.OFPXMT_OFB_ARP_OP, 2),
    "arp_spa": (ofp.OFPXMT_OFB_ARP_SPA, 4),
    "arp_tpa": (ofp.OFPXMT_OFB_ARP_TPA, 4),
    "arp_sha": (ofp.OFPXMT_OFB_ARP_SHA, 6),
    "arp_tha": (ofp.OFPXMT_OFB_ARP_THA, 6),
    "ip_proto": (ofp.OFPXMT_OFB_IP_PROTO, 1),
    "ipv6_src": (ofp.OFPXMT_OFB_IPV6_SRC, 16),
    "ipv6_dst": (ofp.OFPXMT_OFB_IPV6_DST, 16),
    "icmpv6_type": (ofp.OFPXMT_OFB_ICMPV6_TYPE, 1),
    "icmpv6_code": (ofp.OFPXMT_OFB_ICMPV6_CODE, 1),
    "ipv6_nd_target": (ofp.OFPXMT_OFB_IPV6_ND_TARGET, 16),
    "ipv6_nd_sll": (ofp.OFPXMT_OFB_IPV6_ND_SLL, 6),
    "ipv6_nd_tll": (ofp.OFPXMT_OFB_IPV6_ND_TLL, 6),
    # the flags word of a Neighbor Solicitation/Advertisement, the type of its first option
    "nd_reserved": (1, 4),
    "nd_options_type": (2, 1),
}
OXM_CLASSES = {"nd_reserved": OFPXMC_ERICSSON, "nd_options_type": OFPXMC_ERICSSON}
# ... and their OXM headers, exact and masked, packed once
_OXM_HEADERS = {name: (struct.pack("!HBB", OXM_CLASSES.get(name, ofp.OFPXMC_OPENFLOW_BASIC), number << 1, width),
                       struct.pack("!HBB", OXM_CLASSES.get(name, ofp.OFPXMC_OPENFLOW_BASIC), number << 1 | 1,
                                   2 * width))
                for name, (number, width) in OXM_FIELDS.items()}
NX_VENDOR_ID = 0x00002320
NXAST_REG_MOVE = 6
NXAST_LEARN = 16
# nx_action_learn after its experimenter header: idle and hard timeout, priority, cookie, flags,
# table id, pad, fin idle and hard timeout; then the flow_mod_specs
_LEARN = struct.Struct("!HHIHHHHQHBxHH")
_LEARN_COPY = struct.Struct("!HIHIH")  # a match spec copying a whole field: header, src subfield, dst subfield
_LEARN_SRC_VALUE = 1 << 13  # a spec's source is an immediate value, not a field

_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # ofp_header + ofp_flow_mod up to the match


class Unencodable(ValueError):
    """The flow holds something this encoder does not know; use os-ken's serialiser for it."""


def flow_mod(flow: Flow, *, delete: bool = False, xid: int = 0) -> bytes:
    """The OFPT_FLOW_MOD for `flow`: an add, or a delete-strict of exactly it (its table, priority
    and match) under the controller's tag, whatever purpose and owner the cookie on the switch says."""
    match = _match(flow.match)
    body = b"" if delete else _instructions(flow)
    length = _FLOW_MOD.size + len(match) + len(body)
    header = _FLOW_MOD.pack(
        ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, xid, flow.cookie, TAG_MASK if delete else 0,
        table_id(flow.table), ofp.OFPFC_DELETE_STRICT if delete else ofp.OFPFC_ADD, 0, 0, flow.priority,
        ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0)
    return header + match + body


def _match(fields: tuple[tuple[str, MatchValue], ...]) -> bytes:
    tlvs = b"".join([_oxm(name, value) for name, value in sorted(fields, key=_oxm_order)])
    length = 4 + len(tlvs)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + tlvs + bytes(_pad8(length))


def _oxm_order(field: tuple[str, MatchValue]) -> int:
    """os-ken's order: by class, then field number."""
    return _oxm_header(field[0])


def _oxm(name: str, value: MatchValue) -> bytes:
    width = _oxm_field(name)[1]
    exact, masked = _OXM_HEADERS[name]
    if isinstance(value, tuple):
        return masked + _value(value[0], width) + _value(value[1], width)
    return exact + _value(value, width)


def _oxm_field(name: str) -> tuple[int, int]:
    try:
        return OXM_FIELDS[name]
    except KeyError:
        raise Unencodable(f"match field {name!r}") from None


def _value(value: int | str, width: int) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(width, "big")
    if width == 6:
        return bytes.fromhex(value.replace(":", ""))
    if width == 4:
        return socket.inet_aton(value)
    if width == 16:
        return socket.inet_pton(socket.AF_INET6, value)
    raise Unencodable(f"value {value!r}")


def _instructions(flow: Flow) -> bytes:
    out = b""
    if flow.actions:
        actions = b"".join(_action(action) for action in flow.actions)
        out += struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(actions)) + actions
    if flow.goto is not None:
        out += struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, table_id(flow.goto))
    return out


def _action(action: Action) -> bytes:
    if isinstance(action, Output):
        return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, action.port, action.max_len)
    if isinstance(action, SetField):
        tlv = _oxm(action.field, action.value)
        length = 4 + len(tlv)
        return struct.pack("!HH", ofp.OFPAT_SET_FIELD, length + _pad8(length)) + tlv + bytes(_pad8(length))
    if isinstance(action, Move):
        return struct.pack("!HHIHHHHII", ofp.OFPAT_EXPERIMENTER, 24, NX_VENDOR_ID, NXAST_REG_MOVE, action.n_bits,
                           action.src_ofs, action.dst_ofs, _oxm_header(action.src), _oxm_header(action.dst))
    if isinstance(action, Learn):
        return _learn(action)
    raise Unencodable(f"action {action}")


def _learn(action: Learn) -> bytes:
    """nx_action_learn with match specs only: each value, then each copied whole field."""
    specs = b""
    for name, value in action.values:
        width = _oxm_field(name)[1]
        specs += struct.pack("!H", _LEARN_SRC_VALUE | width * 8) + _value(value, width)
        specs += struct.pack("!IH", _oxm_header(name), 0)
    for name in action.copy:
        header, bits = _oxm_header(name), _oxm_field(name)[1] * 8
        specs += _LEARN_COPY.pack(bits, header, 0, header, 0)  # src type 0 (field), dst type 0 (match)
    length = _LEARN.size + len(specs)
    head = _LEARN.pack(ofp.OFPAT_EXPERIMENTER, length + _pad8(length), NX_VENDOR_ID, NXAST_LEARN, 0,
                       action.hard_timeout, action.priority, action.cookie, action.flags, table_id(action.table), 0, 0)
    return head + specs + bytes(_pad8(length))


def _oxm_header(name: str) -> int:
    number, width = _oxm_field(name)
    oxm_class: int = OXM_CLASSES.get(name, ofp.OFPXMC_OPENFLOW_BASIC)  # os-ken's constants are Any to mypy
    return oxm_class << 16 | number << 9 | width


def _pad8(length: int) -> int:
    return (8 - length % 8) % 8
