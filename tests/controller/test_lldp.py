"""The controller's LLDP frames: what one says comes back; anything else reads as None, never an error."""

from __future__ import annotations

import random

import pytest
from os_ken.lib.packet import ethernet, lldp as oslldp, packet

from controller import lldp
from controller.topology import LinkEnd
from openflow.lldp import ETH_TYPE_LLDP


@pytest.mark.parametrize("end", [LinkEnd(1, 1), LinkEnd(0xFFFF_FFFF_FFFF_FFFF, 0xFEFF), LinkEnd(0x11, 3)])
def test_a_frame_says_which_port_sent_it(end: LinkEnd) -> None:
    frame = lldp.build(end, name="spine1")
    assert lldp.parse(frame) == end
    parsed = packet.Packet(frame)  # a standard frame: os-ken's own parser reads it too
    assert parsed.get_protocol(ethernet.ethernet).dst == "01:80:c2:00:00:0e"
    assert parsed.get_protocol(oslldp.lldp).tlvs[3].system_name == b"spine1"


def test_source_macs_are_local_unicast_and_per_switch() -> None:
    assert lldp.source_mac(0x11) == "02:00:00:00:00:11"
    assert lldp.source_mac(0x1) != lldp.source_mac(0x2)


def foreign_lldp() -> bytes:
    """A real switch's own LLDP: chassis = its MAC, port = an interface name."""
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst="01:80:c2:00:00:0e", src="00:11:22:33:44:55", ethertype=ETH_TYPE_LLDP))
    frame.add_protocol(oslldp.lldp([
        oslldp.ChassisID(subtype=oslldp.ChassisID.SUB_MAC_ADDRESS, chassis_id=b"\x00\x11\x22\x33\x44\x55"),
        oslldp.PortID(subtype=oslldp.PortID.SUB_INTERFACE_NAME, port_id=b"swp1"), oslldp.TTL(ttl=120), oslldp.End()]))
    frame.serialize()
    return bytes(frame.data)


def test_other_frames_read_as_none() -> None:
    ours = lldp.build(LinkEnd(1, 5))
    assert lldp.parse(foreign_lldp()) is None
    assert lldp.parse(b"") is None
    assert lldp.parse(ours[:20]) is None  # cut inside the chassis ID
    assert lldp.parse(ours[:12] + b"\x08\x00" + ours[14:]) is None  # not LLDP
    assert lldp.parse(ours.replace(b"dpid:", b"dpix:")) is None
    assert lldp.parse(ours.replace(b"0000000000000001", b"00000000000000zz")) is None


def test_mangled_frames_never_raise() -> None:
    rng = random.Random(7)
    ours = lldp.build(LinkEnd(0x11, 3), name="spine1")
    for _ in range(5000):
        frame = bytearray(ours[:rng.randint(0, len(ours))])
        for _ in range(rng.randint(1, 4)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        result = lldp.parse(bytes(frame))
        assert result is None or isinstance(result, LinkEnd)
