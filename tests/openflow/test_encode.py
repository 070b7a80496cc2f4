"""The fast encoder writes exactly the bytes os-ken's serialiser writes, for every flow we build."""

from __future__ import annotations

import pytest
from hypothesis import given
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from ofstates import states, two_node_state
from openflow import encode, ofmsg
from openflow.flows import Opaque, make_flow
from openflow.model import UnknownDestination
from openflow.pipeline import desired_flows

DATAPATH = ProtocolDesc(ofp.OFP_VERSION)


def os_ken_bytes(flow, *, delete: bool) -> bytes:
    msg = ofmsg.flow_mod(DATAPATH, flow, delete=delete)
    msg.xid = 0
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize("unknown", list(UnknownDestination))
def test_every_flow_of_the_two_node_state_encodes_like_os_ken(unknown):
    for flow in desired_flows(two_node_state(unknown_destination=unknown)):
        for delete in (False, True):
            assert encode.flow_mod(flow, delete=delete) == os_ken_bytes(flow, delete=delete), flow


@given(states)
def test_generated_states_encode_like_os_ken(state):
    for flow in desired_flows(state):
        assert encode.flow_mod(flow) == os_ken_bytes(flow, delete=False)


@pytest.mark.parametrize("match", [
    {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
    {"vlan_vid": 0},  # untagged
    {"vlan_vid": 0x1000 | 4094},
    {"vlan_vid": (0x1000, 0x1000)},  # any tag
], ids=["multicast-bit", "untagged", "vid-4094", "any-tag"])
def test_masked_and_vlan_matches_encode_like_os_ken(match):
    flow = make_flow("l2", 50, match, cookie=1)
    assert encode.flow_mod(flow) == os_ken_bytes(flow, delete=False)


def test_what_it_does_not_know_is_refused_not_guessed():
    with pytest.raises(encode.Unencodable):
        encode.flow_mod(make_flow("l2", 1, {}, actions=(Opaque("learn(...)"),)))
    with pytest.raises(encode.Unencodable):
        encode.flow_mod(make_flow("l2", 1, {"tcp_dst": 80}))
