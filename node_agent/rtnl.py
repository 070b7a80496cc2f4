"""Raw rtnetlink for the agent's hot path: a few typed requests, packed with `struct`, on plain sockets.

Why not pyroute2 here: every pyroute2 0.9 call runs through its own asyncio loop and generic message
machinery (~1-1.5 ms), and one ADD makes about ten. The same requests packed by hand on a blocking
socket cost tens of microseconds. pyroute2 stays for what is cold or needs rich parsing (start-up,
CHECK, the host shim); this module knows only the messages below.

A netlink socket stays in the namespace of the thread that opened it, whichever thread uses it
later: open it inside the namespace (setns in a thread, see `node_agent.netlink.entered`) and it
stays warm there. One request at a time per socket; `RtnlPool` hands out one per request.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

SOL_NETLINK, NETLINK_EXT_ACK, NETLINK_CAP_ACK = 270, 11, 10  # error text in acks, without our request echoed
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 0x200, 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 5, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
NDA_DST, NDA_LLADDR = 1, 2
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
NUD_PERMANENT = 0x80
# the kind-specific mode attribute (IFLA_MACVLAN_MODE, IFLA_IPVLAN_MODE are both 1) and its width
MODE_FORMAT = {"macvlan": "=I", "ipvlan": "=H"}

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_ATTR = struct.Struct("=HH")


class RtnlError(OSError):
    """The kernel refused a request: `errno` is its code, the message names the request."""

    def __str__(self) -> str:
        return str(self.strerror)  # "create macvlan ul1: File exists", without OSError's "[Errno 17]"


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mtu: int
    mac: str
    up: bool
    kind: str


# --- encoding -----------------------------------------------------------------------------------
def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    size = _ATTR.size + len(value)
    return _ATTR.pack(size, kind) + value + b"\0" * (-size % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def text(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def family_of(address: str) -> int:
    """AF_INET6 for an IPv6 address (it has a colon), else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ip(kind: int, address: str) -> bytes:
    """An address attribute, IPv4 or IPv6 as `address` is."""
    return attr(kind, socket.inet_pton(family_of(address), address))


def mac_bytes(kind: int, mac: str) -> bytes:
    return attr(kind, bytes.fromhex(mac.replace(":", "")))


def ifinfo(index: int = 0, *, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


# --- decoding -----------------------------------------------------------------------------------
def attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in `data[offset:]` by type (nested ones undecoded)."""
    found, end = {}, len(data)
    while offset + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        found[kind & ~NLA_F_NESTED] = data[offset + _ATTR.size:offset + size]
        offset += (size + 3) & ~3
    return found


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode()


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(body)
    found = attrs(body, _IFINFO.size)
    info = attrs(found.get(IFLA_LINKINFO, b""))
    return Link(index=index, name=_text(found.get(IFLA_IFNAME, b"")), mtu=struct.unpack("=I", found[IFLA_MTU])[0],
                mac=_mac(found.get(IFLA_ADDRESS, b"")), up=bool(flags & IFF_UP),
                kind=_text(info.get(IFLA_INFO_KIND, b"")))


def _error(body: bytes, flags: int) -> tuple[int, str]:
    """An NLMSG_ERROR's errno (0 for an ack) and the kernel's extended-ack text, if any."""
    code = -struct.unpack_from("=i", body)[0]
    message = ""
    if code and flags & NLM_F_ACK_TLVS:  # with CAP_ACK the echoed request is its header alone
        message = _text(attrs(body, 4 + _HEADER.size).get(NLMSGERR_ATTR_MSG, b""))
    return code, message


# --- the socket ---------------------------------------------------------------------------------
class Rtnl:
    """One NETLINK_ROUTE socket in one namespace; blocking requests, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = 0

    @classmethod
    def open(cls) -> Rtnl:
        """A socket in the calling thread's namespace."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.bind((0, 0))
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Send one request and read up to its ack or dump end; the answer messages' bodies.
        A refusal raises RtnlError naming `what`."""
        self._seq += 1
        seq = self._seq
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body)
        bodies: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                size, msg_type, msg_flags, msg_seq, _ = _HEADER.unpack_from(data, offset)
                body_of = data[offset + _HEADER.size:offset + size]
                offset += (size + 3) & ~3
                if msg_seq != seq:
                    continue  # not ours (e.g. a notification): skip
                if msg_type == NLMSG_ERROR:
                    code, message = _error(body_of, msg_flags)
                    if code:
                        raise RtnlError(code, f"{what}: {message or os.strerror(code)}")
                    return bodies
                if msg_type == NLMSG_DONE:
                    return bodies
                bodies.append(body_of)
                if not msg_flags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return bodies

    def do(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """A change, acknowledged by the kernel."""
        self.request(kind, flags | NLM_F_ACK, body, what)

    # links ---------------------------------------------------------------------------------
    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        try:
            found = self.request(RTM_GETLINK, 0, ifinfo() + text(IFLA_IFNAME, name), f"get link {name}")
        except RtnlError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return parse_link(found[0])

    def link_by_index(self, index: int) -> Link:
        return parse_link(self.request(RTM_GETLINK, 0, ifinfo(index), f"get link #{index}")[0])

    def index(self, name: str) -> int | None:
        link = self.link(name)
        return link.index if link else None

    def add_child(self, *, kind: str, mode: int, parent: int, name: str, mtu: int | None = None,
                  mac: str | None = None, netns_fd: int | None = None, what: str = "") -> None:
        """A macvlan or ipvlan link on `parent`, made directly inside the namespace of `netns_fd` if given."""
        data = attr(IFLA_INFO_DATA | NLA_F_NESTED, attr(1, struct.pack(MODE_FORMAT[kind], mode)))
        body = ifinfo() + text(IFLA_IFNAME, name) + u32(IFLA_LINK, parent) + nested(
            IFLA_LINKINFO, text(IFLA_INFO_KIND, kind), data)
        body += (u32(IFLA_MTU, mtu) if mtu else b"") + (mac_bytes(IFLA_ADDRESS, mac) if mac else b"")
        body += u32(IFLA_NET_NS_FD, netns_fd) if netns_fd is not None else b""
        self.do(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what or f"create {kind} {name}")

    def set_link(self, index: int, *, name: str | None = None, mac: str | None = None, up: bool | None = None,
                 what: str = "") -> None:
        """Rename, re-address and/or bring up or down link `index`, in one request."""
        flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
        body = ifinfo(index, flags=flags, change=change)
        body += (text(IFLA_IFNAME, name) if name else b"") + (mac_bytes(IFLA_ADDRESS, mac) if mac else b"")
        self.do(RTM_NEWLINK, 0, body, what or f"set link #{index}")

    def delete_link(self, index: int, what: str = "") -> None:
        self.do(RTM_DELLINK, 0, ifinfo(index), what or f"delete link #{index}")

    # addresses, routes, neighbours -----------------------------------------------------------
    def add_address(self, index: int, address: str, prefix: int, *, nodad: bool = False, what: str = "") -> None:
        """Add an IPv4 or IPv6 address; `nodad` (IPv6) makes it usable at once, skipping duplicate
        address detection (the kernel computes an IPv6 address's scope itself)."""
        family, flags = family_of(address), IFA_F_NODAD if nodad else 0
        body = _IFADDR.pack(family, prefix, flags, RT_SCOPE_UNIVERSE, index)
        body += (ip(IFA_LOCAL, address) if family == socket.AF_INET else b"") + ip(IFA_ADDRESS, address)
        body += u32(IFA_FLAGS, flags) if flags else b""
        self.do(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what or f"add {address}/{prefix}")

    def addresses(self, index: int, family: int = socket.AF_INET) -> list[str]:
        """The addresses of link `index` in `family` (IPv6: global scope only, no link-local), from a
        dump of all, filtered here: no strict checking needed."""
        body = _IFADDR.pack(family, 0, 0, 0, 0)
        found = []
        for msg in self.request(RTM_GETADDR, NLM_F_DUMP, body, "list addresses"):
            msg_family, _, _, scope, msg_index = _IFADDR.unpack_from(msg)
            if msg_index == index and msg_family == family and scope == RT_SCOPE_UNIVERSE:
                found.append(socket.inet_ntop(family, attrs(msg, _IFADDR.size)[IFA_ADDRESS]))
        return found

    def ipv4_addresses(self, index: int) -> list[str]:
        return self.addresses(index, socket.AF_INET)

    def default_route_oif(self) -> int | None:
        """The output link of the main table's IPv4 default route."""
        for msg in self.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0),
                                "list routes"):
            dst_len, table = msg[1], msg[4]
            found = attrs(msg, _RTMSG.size)
            if dst_len == 0 and struct.unpack("=I", found.get(RTA_TABLE, struct.pack("=I", table)))[0] == RT_TABLE_MAIN:
                if RTA_OIF in found:
                    return int(struct.unpack("=I", found[RTA_OIF])[0])
        return None

    def route(self, dst: str, *, oif: int, gateway: str | None = None, scope: int = RT_SCOPE_UNIVERSE,
              prefsrc: str | None = None, delete: bool = False) -> None:
        """Replace (or delete) the main-table route to `dst` (an IPv4 or IPv6 CIDR) through `oif`."""
        address, _, prefix = dst.partition("/")
        family = family_of(address)
        full = 32 if family == socket.AF_INET else 128
        body = _RTMSG.pack(family, int(prefix or full), 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope,
                           RTN_UNICAST, 0)
        body += ip(RTA_DST, address) + u32(RTA_OIF, oif)
        body += (ip(RTA_GATEWAY, gateway) if gateway else b"") + (ip(RTA_PREFSRC, prefsrc) if prefsrc else b"")
        if delete:
            self.do(RTM_DELROUTE, 0, body, f"delete route to {dst}")
        else:
            self.do(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"route to {dst}")

    def neighbour(self, address: str, *, index: int, mac: str | None = None) -> None:
        """Replace the permanent neighbour entry `address` -> `mac` (IPv4 or IPv6) on link `index`;
        without `mac`, delete it."""
        body = _NDMSG.pack(family_of(address), index, NUD_PERMANENT, 0, 0) + ip(NDA_DST, address)
        if mac is None:
            self.do(RTM_DELNEIGH, 0, body, f"delete neighbour {address}")
        else:
            self.do(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body + mac_bytes(NDA_LLADDR, mac),
                    f"neighbour {address}")


class RtnlPool:
    """Warm sockets in one namespace, one per concurrent request, made on demand by `opener` and kept."""

    def __init__(self, opener: Callable[[], Rtnl]) -> None:
        self._opener = opener
        self._free: list[Rtnl] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def socket(self) -> Iterator[Rtnl]:
        with self._lock:
            nl = self._free.pop() if self._free else None
        nl = nl or self._opener()
        try:
            yield nl
        except RtnlError:
            self._release(nl)  # a refusal leaves the socket in step
            raise
        except BaseException:
            nl.close()  # anything else may have left an answer unread
            raise
        self._release(nl)

    def _release(self, nl: Rtnl) -> None:
        with self._lock:
            self._free.append(nl)

    def close(self) -> None:
        with self._lock:
            for nl in self._free:
                nl.close()
            self._free.clear()

