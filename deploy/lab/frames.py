"""Raw Ethernet frames on a rig host: send an exact ARP frame, or see what arrives.

Tools like arping cannot forge a sender address or report "nothing came"; these can. The
AF_PACKET socket is opened inside the host's namespace and used from the calling thread.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass

from deploy.lab import netns

ETH_P_ARP = 0x0806
ETH_P_ALL = 0x0003
BROADCAST = "ff:ff:ff:ff:ff:ff"


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
    seen: list[Arp] = []
    with open_socket(ns, ifname) as sock:
        if send_first:
            sock.send(send_first)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            frame, address = sock.recvfrom(65535)
            if address[2] == socket.PACKET_OUTGOING:
                continue
            arp = parse_arp(frame)
            if arp:
                seen.append(arp)
    return seen
