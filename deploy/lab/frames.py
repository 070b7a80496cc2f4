"""Raw Ethernet frames on a rig host: send an exact frame, or see what arrives.

Tools like arping cannot forge a sender address, add VLAN tags or report "nothing came"; these
can. The AF_PACKET socket is opened inside the host's namespace and used from the calling thread.
Captures are bounded (a deadline, and a stop condition) so a test never waits on silence longer
than it asked to.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from deploy.lab import netns
from node_agent import announce
from node_agent.announce import internet_checksum

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100  # a customer VLAN tag
ETH_P_8021AD = 0x88A8  # a service VLAN tag: the outer one of QinQ
BROADCAST = "ff:ff:ff:ff:ff:ff"
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58


@dataclass(frozen=True)
class Arp:
    op: int
    sha: str
    spa: str
    tha: str
    tpa: str
    eth_src: str
    eth_dst: str


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def arp_frame(arp: Arp) -> bytes:
    header = mac_bytes(arp.eth_dst) + mac_bytes(arp.eth_src) + struct.pack("!H", ETH_P_ARP)
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, arp.op)
    body += mac_bytes(arp.sha) + socket.inet_aton(arp.spa) + mac_bytes(arp.tha) + socket.inet_aton(arp.tpa)
    return header + body


def ethernet(*, dst: str, src: str, ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """An Ethernet frame; `tags` are (TPID, VID) pairs, outermost first (QinQ: 0x88a8 then 0x8100)."""
    vlan = b"".join(struct.pack("!HH", tpid, vid & 0x0FFF) for tpid, vid in tags)
    return mac_bytes(dst) + mac_bytes(src) + vlan + struct.pack("!H", ethertype) + payload


def ipv4_udp(*, src: str, dst: str, payload: bytes, sport: int = 40000, dport: int = 9) -> bytes:
    """An IPv4 packet carrying one UDP datagram (discard port), header checksum filled in and the
    UDP checksum left 0 (optional in IPv4): what a receiver's stack accepts as is."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + udp


def ipv6_packet(*, src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 255) -> bytes:
    """An IPv6 packet; hop limit 255 by default, what ND messages must carry (RFC 4861 §7.1)."""
    return (struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload)


def ipv6_udp(*, src: str, dst: str, payload: bytes, sport: int = 40000, dport: int = 9) -> bytes:
    """An IPv6 packet carrying one UDP datagram, checksum filled in (mandatory over IPv6)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    checksum = internet_checksum(_pseudo_header(src, dst, len(udp), IPPROTO_UDP) + udp) or 0xFFFF
    return ipv6_packet(src=src, dst=dst, next_header=IPPROTO_UDP, payload=udp[:6] + struct.pack("!H", checksum)
                       + udp[8:], hop_limit=64)


def icmpv6(*, src: str, dst: str, kind: int, body: bytes, code: int = 0) -> bytes:
    """An IPv6 packet carrying one ICMPv6 message (type `kind`), checksum filled in; `body` is what
    follows the checksum (an ND message's flags, target and options, say)."""
    message = struct.pack("!BBH", kind, code, 0) + body
    checksum = internet_checksum(_pseudo_header(src, dst, len(message), IPPROTO_ICMPV6) + message)
    return ipv6_packet(src=src, dst=dst, next_header=IPPROTO_ICMPV6,
                       payload=message[:2] + struct.pack("!H", checksum) + message[4:])


def nd_body(*, target: str, flags: int = 0, option: tuple[int, str] | None = None) -> bytes:
    """A Neighbor Solicitation's or Advertisement's body: flags word, target, and an optional
    link-layer address option (1 source, 2 target; RFC 4861 §4.6.1)."""
    body = struct.pack("!I", flags) + socket.inet_pton(socket.AF_INET6, target)
    if option is not None:
        kind, mac = option
        body += struct.pack("!BB", kind, 1) + mac_bytes(mac)
    return body


def solicited_node(ip: str) -> tuple[str, str]:
    """The solicited-node multicast group of `ip` (RFC 4291 §2.7.1) and its MAC (RFC 2464 §7)."""
    group = socket.inet_ntop(socket.AF_INET6, bytes.fromhex("ff0200000000000000000001ff")
                             + socket.inet_pton(socket.AF_INET6, ip)[-3:])
    return group, multicast_mac(group)


def multicast_mac(group: str) -> str:
    """The Ethernet address of an IPv6 multicast group: 33:33 and the group's low 32 bits."""
    return mac_text(announce.multicast_mac(group))


def _pseudo_header(src: str, dst: str, length: int, next_header: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!I3xB", length, next_header))


def parse_arp(frame: bytes) -> Arp | None:
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    op = struct.unpack("!H", frame[20:22])[0]
    return Arp(op=op, sha=mac_text(frame[22:28]), spa=socket.inet_ntoa(frame[28:32]),
               tha=mac_text(frame[32:38]), tpa=socket.inet_ntoa(frame[38:42]),
               eth_src=mac_text(frame[6:12]), eth_dst=mac_text(frame[0:6]))


def open_socket(ns: str, ifname: str) -> socket.socket:
    with netns.entered(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    return sock


def send(ns: str, ifname: str, frame: bytes) -> None:
    with open_socket(ns, ifname) as sock:
        sock.send(frame)


def arp_exchange(ns: str, ifname: str, request: Arp, *, timeout: float = 2.0) -> list[Arp]:
    """Send `request`, return the ARP replies for its target that arrive within `timeout`."""
    return [arp for arp in listen(ns, ifname, timeout=timeout, send_first=arp_frame(request))
            if arp.op == 2 and arp.spa == request.tpa]


def listen(ns: str, ifname: str, *, timeout: float, send_first: bytes | None = None) -> list[Arp]:
    """Every ARP frame arriving on `ifname` (not sent by it) within `timeout` seconds."""
    frames = capture(ns, ifname, timeout=timeout, send_first=send_first)
    return [arp for arp in map(parse_arp, frames) if arp]


def capture(ns: str, ifname: str, *, timeout: float, send_first: bytes | None = None,
            until: Callable[[bytes], bool] | None = None, ready: Callable[[], None] | None = None) -> list[bytes]:
    """Every frame arriving on `ifname` (not sent by it) within `timeout` seconds, or up to the
    first one `until` accepts. `ready` is called once the socket listens (send from there).

    A VLAN tag the kernel took off on receipt (rx VLAN offload) is not in the returned bytes:
    look for what a frame carries (a payload marker), not for its tags."""
    seen: list[bytes] = []
    with open_socket(ns, ifname) as sock:
        if send_first:
            sock.send(send_first)
        if ready:
            ready()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            frame, address = sock.recvfrom(65535)
            if address[2] == socket.PACKET_OUTGOING:
                continue
            seen.append(frame)
            if until is not None and until(frame):
                break
    return seen
