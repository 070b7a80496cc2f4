"""The agent's one door to the kernel: typed netlink operations through pyroute2.

Two kinds of namespace: the node's (where the uplink, the host shim and its routes live; named by
the agent's `netns` config, or the agent's own) and a pod's (a path from CNI_NETNS, either
/run/netns/NAME or /proc/PID/ns/net). pyroute2's own `IPRoute(netns=...)` forks a helper per socket
(~15 ms) and creates a missing named namespace; instead a worker thread enters the namespace with
setns(2) (which moves only that thread), opens its netlink socket there and leaves: the socket
keeps the namespace it was made in. Node-namespace sockets live on worker threads and stay warm.

macvlan and ipvlan are written once; the link kind is a parameter.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

CLONE_NEWNET = 0x40000000
NUD_PERMANENT = 0x80
SCOPE_LINK = 253
ETH_P_ARP = 0x0806
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetlinkFailure(RuntimeError):
    """A kernel operation failed; the message names the object."""


class NoIpvlan(NetlinkFailure):
    def __init__(self) -> None:
        super().__init__("this kernel has no ipvlan support (CONFIG_IPVLAN)")


class NetnsGone(NetlinkFailure):
    """The pod's namespace no longer exists (its path is gone or no longer a namespace)."""


@dataclass(frozen=True)
class Uplink:
    name: str
    index: int
    mtu: int
    mac: str
    ip: str | None


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None


@dataclass(frozen=True)
class LinkSpec:
    """What the pod's link must be: kind is `macvlan` or `ipvlan`; mode is that kind's mode."""

    kind: str
    mode: str
    mtu: int
    mac: str | None = None


@dataclass(frozen=True)
class PodLink:
    """A pod's link as the kernel has it, for CHECK and for rebuilding the agent's view."""

    ifname: str
    kind: str
    mode: str | None
    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...]
    routes: tuple[Route, ...]


def netns_path(netns: str) -> str:
    """A namespace name (/run/netns/NAME) or path (/proc/PID/ns/net) as a path."""
    return netns if "/" in netns else os.path.join("/run/netns", netns)


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread in namespace `path`; always return to the thread's own."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NetnsGone(f"netns {path} does not exist") from None
        try:
            _setns(target, path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the agent's own netns")
    finally:
        os.close(own)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:
            raise NetnsGone(f"{what} is not a network namespace")
        raise OSError(code, f"setns into {what}: {os.strerror(code)}")


def open_iproute(netns: str) -> IPRoute:
    """An RTNL socket in `netns` (a name or path), without forking.

    pyroute2 binds the socket to the creating thread: use the result only on this thread.
    """
    with entered(netns_path(netns)):
        return IPRoute(groups=0)


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _kind_data(link: object) -> tuple[str, dict]:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    if info is None:
        return "", {}
    data = info.get_attr("IFLA_INFO_DATA")
    return info.get_attr("IFLA_INFO_KIND") or "", dict(data["attrs"]) if data is not None else {}


class NodeNetlink:
    """Netlink in the node's namespace: the uplink, pod link creation, the host shim and its routes.

    pyroute2 (0.9) gives every thread that uses an IPRoute its own socket, made lazily in that
    thread's namespace. So node-namespace calls run on a few worker threads that enter the node's
    namespace once, for good, and each keep one warm socket: no call can land in the wrong namespace.
    """

    def __init__(self, netns: str | None = None, *, workers: int = 4) -> None:
        self.netns = netns
        if netns and not os.path.exists(netns_path(netns)):
            raise NetlinkFailure(f"node netns {netns} does not exist")
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="netlink-node", initializer=self._init_worker)

    def _init_worker(self) -> None:
        if self.netns:
            fd = os.open(netns_path(self.netns), os.O_RDONLY)
            try:
                _setns(fd, f"netns {self.netns}")  # this worker thread stays there
            finally:
                os.close(fd)
        self._local.ipr = IPRoute(groups=0)

    def _run(self, body: Callable[[IPRoute], T]) -> T:
        return self._pool.submit(lambda: body(self._local.ipr)).result()

    def call(self, body: Callable[[], T]) -> T:
        """`body()` on a thread inside the node's namespace: a process it starts starts there too."""
        return self._pool.submit(body).result()

    def close(self) -> None:
        self._pool.shutdown()

    def default_route_ifname(self) -> str:
        def body(ipr: IPRoute) -> str | None:
            for route in ipr.get_default_routes(family=socket.AF_INET):
                oif = route.get_attr("RTA_OIF")
                if oif:
                    return str(ipr.get_links(oif)[0].get_attr("IFLA_IFNAME"))
            return None

        name = self._run(body)
        if name is None:
            raise NetlinkFailure(f"no default route in {self._where()} to pick a master from; set master")
        return name

    def uplink(self, name: str | None = None) -> Uplink:
        """The master interface: `name`, or the interface of the default route."""
        name = name or self.default_route_ifname()

        def body(ipr: IPRoute) -> Uplink | None:
            try:
                link = ipr.link("get", ifname=name)[0]
            except NetlinkError:
                return None
            index = link["index"]
            addrs = ipr.get_addr(index=index, family=socket.AF_INET)
            return Uplink(name=name, index=index, mtu=link.get_attr("IFLA_MTU"), mac=link.get_attr("IFLA_ADDRESS"),
                          ip=addrs[0].get_attr("IFA_ADDRESS") if addrs else None)

        uplink = self._run(body)
        if uplink is None:
            raise NetlinkFailure(f"failed to lookup master {name!r} in {self._where()}: no such interface")
        return uplink

    def create_child(self, *, uplink: Uplink, spec: LinkSpec, pod_netns: str, tmp_name: str) -> None:
        """A macvlan/ipvlan child of the uplink, created directly inside the pod's namespace.

        It carries a temporary name: the final name (e.g. eth0) usually exists in the node's
        namespace, and a rename in the pod's namespace avoids the clash (as the reference plugin does).
        """
        kwargs = {"ifname": tmp_name, "mtu": spec.mtu, **_child_kwargs(uplink, spec)}
        fd = _open_netns(pod_netns)
        try:
            self._run(lambda ipr: ipr.link("add", net_ns_fd=fd, **kwargs))
        except NetlinkError as exc:
            if spec.kind == "ipvlan" and exc.code in (errno.EOPNOTSUPP, errno.ENOENT):
                raise NoIpvlan() from None
            raise NetlinkFailure(f"failed to create {spec.kind} on {uplink.name}: {exc.args[-1]}") from None
        finally:
            os.close(fd)

    # the host shim: neither a macvlan nor an ipvlan child can reach its parent (the parent's own
    # traffic goes straight to the wire), so the node talks to its pods through a sibling child:
    # a macvlan in bridge mode, or an ipvlan (Terway's ipvl_x) in the pods' mode, as a port has one
    # mode for all its ipvlan children. An ipvlan shim has no address, so frames for the node IP
    # still reach the uplink; it carries the node's MAC and sends nothing but ARP for the node IP,
    # which the node's own placement allows past the switch's anti-spoofing.
    def ensure_shim(self, uplink: Uplink, name: str, spec: LinkSpec) -> str:
        """The host-side shim on the uplink, a child as `spec` says, up; return its MAC."""
        def body(ipr: IPRoute) -> str:
            index = _index(ipr, name)
            if index is not None and _kind_data(ipr.get_links(index)[0])[0] != spec.kind:
                raise NetlinkFailure(f"host shim {name} exists in {self._where()} and is not a {spec.kind}")
            if index is None:
                ipr.link("add", ifname=name, **_child_kwargs(uplink, spec))
                index = _index(ipr, name)
            ipr.link("set", index=index, state="up")
            return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))

        return self._run(body)

    def host_routes(self, shim: str) -> set[str]:
        """The pod IPs the shim has /32 routes to."""
        def body(ipr: IPRoute) -> set[str]:
            index = _index(ipr, shim)
            routes = ipr.get_routes(family=socket.AF_INET, oif=index, table=254) if index is not None else []
            return {r.get_attr("RTA_DST") for r in routes if r["dst_len"] == 32}

        return self._run(body)

    def add_host_route(self, shim: str, *, ip: str, mac: str, src: str | None) -> None:
        """A /32 to the pod through the shim, and its neighbour entry (no ARP needed to start)."""
        def body(ipr: IPRoute) -> None:
            index = _index(ipr, shim)
            if index is None:
                raise NetlinkFailure(f"host shim {shim} is missing from {self._where()}")
            extra = {"prefsrc": src} if src else {}
            ipr.route("replace", dst=f"{ip}/32", oif=index, scope=SCOPE_LINK, **extra)
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)

        self._run(body)

    def delete_host_route(self, shim: str, *, ip: str) -> None:
        def body(ipr: IPRoute) -> None:
            index = _index(ipr, shim)
            if index is None:
                return
            with contextlib.suppress(NetlinkError):  # already gone
                ipr.route("del", dst=f"{ip}/32", oif=index, scope=SCOPE_LINK)
            with contextlib.suppress(NetlinkError):
                ipr.neigh("del", dst=ip, ifindex=index)

        self._run(body)

    def _where(self) -> str:
        return f"netns {self.netns}" if self.netns else "the node's netns"


def _child_kwargs(uplink: Uplink, spec: LinkSpec) -> dict[str, object]:
    """pyroute2's arguments for a macvlan/ipvlan child of `uplink` (name and namespace aside)."""
    if spec.kind == "macvlan":
        return {"kind": "macvlan", "link": uplink.index, "macvlan_mode": spec.mode,
                **({"address": spec.mac} if spec.mac else {})}
    return {"kind": "ipvlan", "link": uplink.index, "ipvlan_mode": IPVLAN_MODES[spec.mode]}


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsGone(f"netns {path} does not exist") from None


class PodNetns:
    """Netlink inside one pod's namespace for the length of one request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ipr = open_iproute(path)

    def __enter__(self) -> PodNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ipr.close()

    def has(self, ifname: str) -> bool:
        return _index(self.ipr, ifname) is not None

    def delete(self, ifname: str) -> bool:
        """Delete `ifname`; False when it was not there."""
        index = _index(self.ipr, ifname)
        if index is None:
            return False
        try:
            self.ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
        return True

    def configure(self, tmp_name: str, *, ifname: str, mac: str | None, addresses: list[str], routes: list[Route],
                  neighbours: dict[str, str]) -> None:
        """Rename the new link (and give it `mac`: it was made before the MAC was known), then
        arp_notify, addresses, up, routes and static neighbours."""
        index = _index(self.ipr, tmp_name)
        if index is None:
            raise NetlinkFailure(f"link {tmp_name} vanished from netns {self.path}")
        self.ipr.link("set", index=index, ifname=ifname, **({"address": mac} if mac else {}))
        with entered(self.path):
            _write_sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/arp_notify", "1")
        for cidr in addresses:
            address, prefix = cidr.split("/")
            self.ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
        self.ipr.link("set", index=index, state="up")
        for route in routes:
            extra = {"gateway": route.gw} if route.gw else {"scope": SCOPE_LINK}
            self.ipr.route("replace", dst=route.dst, oif=index, **extra)
        for ip, mac in neighbours.items():
            self.ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)

    def read(self, ifname: str) -> PodLink | None:
        index = _index(self.ipr, ifname)
        if index is None:
            return None
        link = self.ipr.get_links(index)[0]
        kind, data = _kind_data(link)
        modes = {v: k for k, v in (MACVLAN_MODES if kind == "macvlan" else IPVLAN_MODES).items()}
        mode = data.get("IFLA_MACVLAN_MODE" if kind == "macvlan" else "IFLA_IPVLAN_MODE")
        mode = mode if isinstance(mode, str) or mode is None else modes.get(mode)  # pyroute2 names some modes
        addrs = self.ipr.get_addr(index=index, family=socket.AF_INET)
        routes = self.ipr.get_routes(family=socket.AF_INET, oif=index, table=254)
        return PodLink(
            ifname=ifname, kind=kind, mode=mode,
            mac=link.get_attr("IFLA_ADDRESS"), mtu=link.get_attr("IFLA_MTU"),
            up=bool(link["flags"] & 1),
            addresses=tuple(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in addrs),
            routes=tuple(Route(dst=f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}", gw=r.get_attr("RTA_GATEWAY"))
                         for r in routes),
        )

    def mac(self, ifname: str) -> str:
        index = _index(self.ipr, ifname)
        if index is None:
            raise NetlinkFailure(f"link {ifname} vanished from netns {self.path}")
        return str(self.ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def send_garp(netns: str, ifname: str, *, ip: str, mac: str) -> None:
    """One gratuitous ARP request from a pod's link, so the segment learns its MAC now."""
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    with sock:
        sock.bind((ifname, ETH_P_ARP))
        sock.send(garp_frame(ip=ip, mac=mac))


def garp_frame(*, ip: str, mac: str) -> bytes:
    hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
    ether = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return ether + arp


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def read_sysctl_in(netns: str, key: str) -> str:
    """A sysctl as seen inside `netns` (for tests and CHECK)."""
    with entered(netns_path(netns)):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
