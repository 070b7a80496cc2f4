"""openflow.ofmsg without a switch: FlowMods survive os-ken's own serialise/parse and read back equal.

The same round trip through a real Open vSwitch is in test_ovs_roundtrip.py.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from ofstates import COOKIE, states, two_node_state
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from openflow.cookies import TAG_MASK, tag_of
from openflow.flows import Opaque, sort_flows
from openflow.model import SwitchState
from openflow.ofmsg import bundle_transaction, flow_mod, flow_mod_bytes, flow_stats_request, parse_flow_stats
from openflow.pipeline import desired_flows

DP = ProtocolDesc(ofp.OFP_VERSION)


def wire(msg: object) -> object:
    """`msg` serialised to bytes and parsed back by os-ken, as a switch would receive it."""
    msg.serialize()  # type: ignore[attr-defined]
    data = bytes(msg.buf)  # type: ignore[attr-defined]
    version, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    return ofproto_parser.msg(DP, version, msg_type, length, xid, data)


def as_stats(mod: object) -> parser.OFPFlowStats:
    return parser.OFPFlowStats(table_id=mod.table_id, priority=mod.priority, cookie=mod.cookie,  # type: ignore
                               match=mod.match, instructions=mod.instructions)  # type: ignore[attr-defined]


@given(states)
def test_flow_mods_parse_back_to_the_same_flows(state: SwitchState) -> None:
    flows = desired_flows(state)
    assert parse_flow_stats(as_stats(wire(flow_mod(DP, flow))) for flow in flows) == flows


def test_delete_is_strict_and_masked_to_our_tag() -> None:
    flow = sort_flows(desired_flows(two_node_state()))[0]
    mod = wire(flow_mod(DP, flow, delete=True))
    assert (mod.command, mod.cookie, mod.cookie_mask, mod.priority) == (  # type: ignore[attr-defined]
        ofp.OFPFC_DELETE_STRICT, flow.cookie, TAG_MASK, flow.priority)
    assert tag_of(mod.cookie) == tag_of(COOKIE)  # type: ignore[attr-defined]
    assert (mod.out_port, mod.out_group, mod.instructions) == (ofp.OFPP_ANY, ofp.OFPG_ANY, [])  # type: ignore
    assert dict(mod.match.items()) == dict(flow.match)  # type: ignore[attr-defined]


def test_add_does_not_touch_other_cookies() -> None:
    flow = sort_flows(desired_flows(two_node_state()))[0]
    mod = wire(flow_mod(DP, flow))
    assert (mod.command, mod.cookie, mod.cookie_mask, mod.flags) == (  # type: ignore[attr-defined]
        ofp.OFPFC_ADD, flow.cookie, 0, 0)  # type: ignore[attr-defined]


def test_stats_request_asks_all_tables_for_our_tag_only() -> None:
    request = flow_stats_request(DP, COOKIE | 0x1234)  # the configured cookie's low bits do not count
    request.serialize()  # os-ken cannot parse requests back; the fields it serialised from:
    assert (request.table_id, request.cookie, request.cookie_mask) == (ofp.OFPTT_ALL, tag_of(COOKIE), TAG_MASK)
    assert (request.out_port, request.out_group, dict(request.match.items())) == (ofp.OFPP_ANY, ofp.OFPG_ANY, {})


def test_foreign_content_under_our_cookie_is_kept_opaque_and_can_only_be_deleted() -> None:
    flow = sort_flows(desired_flows(two_node_state()))[-1]
    stats = as_stats(wire(flow_mod(DP, flow)))
    stats.instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionPopVlan()])]
    (found,) = parse_flow_stats([stats])
    assert found.key == flow.key and found != flow
    assert isinstance(found.actions[0], Opaque)
    with pytest.raises(ValueError, match="cannot send"):
        flow_mod(DP, found)
    assert wire(flow_mod(DP, found, delete=True)).command == ofp.OFPFC_DELETE_STRICT  # type: ignore


def serialized(msg: object, xid: int) -> bytes:
    msg.set_xid(xid)  # type: ignore[attr-defined]
    msg.serialize()  # type: ignore[attr-defined]
    return bytes(msg.buf)  # type: ignore[attr-defined]


def test_a_bundle_transaction_is_what_os_ken_would_send_message_by_message() -> None:
    flows = sort_flows(desired_flows(two_node_state()))[:3]
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    blob = bundle_transaction([flow_mod_bytes(f) for f in flows], bundle_id=7, flags=flags, first_xid=0xFFFFFFFE)

    messages, offset = [], 0
    while offset < len(blob):
        (length,) = struct.unpack_from("!H", blob, offset + 2)
        messages.append(blob[offset:offset + length])
        offset += length
    xids = [0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2, 3]  # consecutive, wrapping around
    expected = [serialized(parser.ONFBundleCtrlMsg(DP, 7, ofp.ONF_BCT_OPEN_REQUEST, flags, []), xids[0])]
    for xid, flow in zip(xids[1:4], flows):
        inner = flow_mod(DP, flow)
        inner.set_xid(xid)
        expected.append(serialized(parser.ONFBundleAddMsg(DP, 7, flags, inner, []), xid))
    expected.append(serialized(parser.ONFBundleCtrlMsg(DP, 7, ofp.ONF_BCT_COMMIT_REQUEST, flags, []), xids[4]))
    expected.append(serialized(parser.OFPBarrierRequest(DP), xids[5]))
    assert messages == expected
