"""The controller's LLDP frames between switches: which switch port sent this one (pure).

The controller sends one frame out of every configured link port (controller/links.py) and gets it
back as a packet-in from the switch at the far end (openflow/lldp.py punts them). The frame says who
sent it: chassis ID "dpid:<16 hex digits>" and port ID "<port>", both locally assigned subtypes (IEEE
802.1AB §8.5.2/§8.5.3), plus the switch's configured name as system name for whoever captures it. A
frame is read back only if it is one of ours; anything else on a link port (a real switch's own LLDP,
a truncated or hostile frame) reads as None and is ignored, never an exception: the packet-in handler
runs on the OpenFlow event thread, where one would stop the controller.
"""

from __future__ import annotations

import struct

from os_ken.lib.packet import ethernet, lldp, packet

from controller.topology import LinkEnd
from openflow.lldp import ETH_TYPE_LLDP

NEAREST_BRIDGE = lldp.LLDP_MAC_NEAREST_BRIDGE  # 01:80:c2:00:00:0e: never forwarded by a bridge
TTL = 4  # seconds a receiver may keep what a frame says (a few of our ~1 s intervals)
_CHASSIS_PREFIX = b"dpid:"
_TLV = struct.Struct("!H")


def source_mac(dpid: int) -> str:
    """A locally administered unicast MAC per switch (02: + the dpid's low 40 bits): frames from two
    switches never share a source, and none is a real host's."""
    low = dpid & 0xFF_FFFF_FFFF
    return ":".join(f"{byte:02x}" for byte in (0x02, *low.to_bytes(5, "big")))


def build(end: LinkEnd, *, name: str | None = None) -> bytes:
    """The frame `end`'s switch sends out of `end`'s port."""
    tlvs = [
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED, chassis_id=_CHASSIS_PREFIX + b"%016x" % end.dpid),
        lldp.PortID(subtype=lldp.PortID.SUB_LOCALLY_ASSIGNED, port_id=b"%d" % end.port),
        lldp.TTL(ttl=TTL),
    ]
    if name:
        tlvs.append(lldp.SystemName(system_name=name.encode()[:255]))
    tlvs.append(lldp.End())
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst=NEAREST_BRIDGE, src=source_mac(end.dpid), ethertype=ETH_TYPE_LLDP))
    frame.add_protocol(lldp.lldp(tlvs))
    frame.serialize()
    return bytes(frame.data)


def parse(frame: bytes) -> LinkEnd | None:
    """The sending switch port of one of our frames; None for anything else (never raises).

    Read by hand, TLV by TLV (a 7-bit type and a 9-bit length, 802.1AB §8.4), rather than through
    os-ken's parser, which raises on what a hostile sender can put on a link port."""
    if len(frame) < 14 or frame[12:14] != ETH_TYPE_LLDP.to_bytes(2, "big"):
        return None
    found: dict[int, bytes] = {}
    offset = 14
    while offset + 2 <= len(frame):
        (header,) = _TLV.unpack_from(frame, offset)
        kind, length = header >> 9, header & 0x1FF
        value = frame[offset + 2:offset + 2 + length]
        if kind == lldp.LLDP_TLV_END or len(value) < length:
            break
        found.setdefault(kind, value)
        offset += 2 + length
    return _end(found.get(lldp.LLDP_TLV_CHASSIS_ID, b""), found.get(lldp.LLDP_TLV_PORT_ID, b""))


def _end(chassis: bytes, port: bytes) -> LinkEnd | None:
    """Our chassis ("dpid:" + 16 hex digits) and port ("<decimal>") IDs, both locally assigned."""
    if chassis[:1] != bytes([lldp.ChassisID.SUB_LOCALLY_ASSIGNED]) or port[:1] != bytes(
            [lldp.PortID.SUB_LOCALLY_ASSIGNED]):
        return None
    dpid, number = chassis[1:], port[1:]
    if not dpid.startswith(_CHASSIS_PREFIX) or len(dpid) != len(_CHASSIS_PREFIX) + 16 or not number.isdigit():
        return None
    try:
        return LinkEnd(int(dpid[len(_CHASSIS_PREFIX):], 16), int(number))
    except ValueError:  # not hex digits
        return None
