"""The announcement frames, byte by byte (a real kernel taking the NA: tests/node_agent/test_dual_stack.py)."""

from __future__ import annotations

import socket
import struct

from node_agent.announce import garp_frame, internet_checksum, na_frame

MAC = "02:00:00:00:00:05"


def test_the_unsolicited_na_goes_to_all_nodes_with_override_and_the_targets_mac() -> None:
    frame = na_frame(ip="fd00:18::5", mac=MAC)
    ipv6, icmp = frame[14:54], frame[54:]

    assert frame[:14] == bytes.fromhex("333300000001" "020000000005" "86dd")
    version, length, next_header, hop_limit = struct.unpack("!IHBB", ipv6[:8])
    assert (version >> 28, length, next_header, hop_limit) == (6, len(icmp), 58, 255)
    assert ipv6[8:24] == socket.inet_pton(socket.AF_INET6, "fd00:18::5"), "from the target, as the kernel's"
    assert ipv6[24:40] == socket.inet_pton(socket.AF_INET6, "ff02::1")
    assert icmp[:2] == bytes([136, 0])
    assert struct.unpack("!I", icmp[4:8])[0] == 0x20000000, "override; not solicited, not a router"
    assert icmp[8:24] == socket.inet_pton(socket.AF_INET6, "fd00:18::5")
    assert icmp[24:] == bytes.fromhex("0201" "020000000005")
    pseudo = ipv6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert internet_checksum(pseudo + icmp) == 0, "a checksum that verifies"


def test_the_gratuitous_arp_is_a_broadcast_request_for_its_own_address() -> None:
    frame = garp_frame(ip="198.18.0.5", mac=MAC)
    assert frame[:14] == bytes.fromhex("ffffffffffff" "020000000005" "0806")
    assert frame[28:32] == frame[38:42] == socket.inet_aton("198.18.0.5")


def test_internet_checksum_pads_odd_lengths() -> None:
    assert internet_checksum(b"\x00\x01\xf2") == internet_checksum(b"\x00\x01\xf2\x00") == 0x0DFE
