"""Announcing a new pod to the segment: one gratuitous ARP (IPv4), one unsolicited Neighbor
Advertisement (IPv6), sent as raw frames from the pod's link.

Why raw frames: the switch answers ARP and ND for placed addresses itself, but hosts and routers
that cached the address's previous MAC (a pod that had it before, on another node) keep using it
until they hear otherwise. The kernel's own announcements (arp_notify, ndisc_notify) fire on link
events only and depend on DAD and address timing; one frame of our own, sent once the pod is
configured, says the same thing every time.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from node_agent.netlink import entered

ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD
ALL_NODES = "ff02::1"
ICMPV6, ND_NEIGHBOR_ADVERT, ND_OPT_TARGET_LL = 58, 136, 2
NA_OVERRIDE = 0x20000000  # R=0 (not a router), S=0 (unsolicited), O=1: replace cached MACs


def send_frame(netns: str, ifname: str, frame: bytes) -> None:
    """Send one Ethernet frame (its type in bytes 12-13) from `ifname` in namespace `netns`."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    with sock:
        sock.bind((ifname, ethertype))
        sock.send(frame)


def announce(netns: str, ifname: str, *, ip: str, mac: str) -> None:
    """A gratuitous ARP for an IPv4 `ip`, an unsolicited NA for an IPv6 one."""
    if ":" in ip:
        send_frame(netns, ifname, na_frame(ip=ip, mac=mac))
    else:
        send_frame(netns, ifname, garp_frame(ip=ip, mac=mac))


def garp_frame(*, ip: str, mac: str) -> bytes:
    hw, addr = _mac(mac), socket.inet_aton(ip)
    ether = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return ether + arp


def na_frame(*, ip: str, mac: str) -> bytes:
    """An unsolicited Neighbor Advertisement (RFC 4861 7.2.6) to all nodes: target `ip` at `mac`,
    override set so caches take the new MAC, hop limit 255 (receivers drop anything less), the
    ICMPv6 checksum over the pseudo-header. Its source is the target itself, as the kernel's own
    advertisements have it, and as the switch's port security lets an advertisement out."""
    src, dst, target = (socket.inet_pton(socket.AF_INET6, a) for a in (ip, ALL_NODES, ip))
    option = struct.pack("!BB", ND_OPT_TARGET_LL, 1) + _mac(mac)
    body = struct.pack("!I", NA_OVERRIDE) + target + option
    pseudo = src + dst + struct.pack("!I3xB", 4 + len(body), ICMPV6)
    checksum = internet_checksum(pseudo + struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, 0) + body)
    icmp = struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, checksum) + body
    ipv6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255) + src + dst
    return multicast_mac(ALL_NODES) + _mac(mac) + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


def multicast_mac(group: str) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 and the group's low 32 bits."""
    return b"\x33\x33" + ipaddress.IPv6Address(group).packed[-4:]


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement sum of RFC 1071 (odd lengths padded with a zero byte)."""
    data += b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))
