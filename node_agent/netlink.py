"""The agent's one door to the kernel: typed netlink operations through pyroute2.

Two kinds of namespace: the node's (where the uplink, the host shim and its routes live; named by
the agent's `netns` config, or the agent's own) and a pod's (a path from CNI_NETNS, either
/run/netns/NAME or /proc/PID/ns/net). pyroute2's own `IPRoute(netns=...)` forks a helper per socket
(~15 ms) and creates a missing named namespace; instead a worker thread enters the namespace with
setns(2) (which moves only that thread), opens its netlink socket there and leaves: the socket
keeps the namespace it was made in. Node-namespace sockets live on worker threads and stay warm.

The hot calls of ADD and DEL go through `node_agent.rtnl` (raw rtnetlink, tens of microseconds a
call) on warm sockets; pyroute2 (~1 ms a call through its asyncio layer) keeps the cold ones: the
host shim, CHECK's and the rebuild's reads.

macvlan and ipvlan are written once; the link kind is a parameter.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.rtnl import Rtnl, RtnlError, RtnlPool

NETNS_HELPER_TIMEOUT = 30


def allow_slow_netns_helper() -> None:
    """pyroute2 0.9 reaches another netns through a forked helper and gives up on it after 2 s: on a
    loaded node (a UML node during a full test run took longer) that failed pod ADDs. Kubelet waits
    minutes for a sandbox; a slow fork is not an error."""
    pyroute2_config.default_communicate_timeout = max(pyroute2_config.default_communicate_timeout,
                                                      NETNS_HELPER_TIMEOUT)


allow_slow_netns_helper()

CLONE_NEWNET = 0x40000000
SCOPE_LINK = 253
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
    ip6: str | None = None  # its global IPv6 address, if it has one


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


def _kind_data(link: object) -> tuple[str, dict[str, Any]]:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    if info is None:
        return "", {}
    data = info.get_attr("IFLA_INFO_DATA")
    return info.get_attr("IFLA_INFO_KIND") or "", dict(data["attrs"]) if data is not None else {}


class NodeNetlink:
    """Netlink in the node's namespace: the uplink, pod link creation, the host shim and its routes.

    Hot calls take a raw socket from a pool opened in the node's namespace. pyroute2 (0.9) gives
    every thread that uses an IPRoute its own socket, made lazily in that thread's namespace, so its
    calls run on a few worker threads that enter the node's namespace once, for good, and each keep
    one warm socket: no call can land in the wrong namespace.
    """

    def __init__(self, netns: str | None = None, *, workers: int = 4) -> None:
        self.netns = netns
        if netns and not os.path.exists(netns_path(netns)):
            raise NetlinkFailure(f"node netns {netns} does not exist")
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="netlink-node", initializer=self._init_worker)
        self._rtnl = RtnlPool(self._open_rtnl)

    def _open_rtnl(self) -> Rtnl:
        if not self.netns:
            return Rtnl.open()
        with entered(netns_path(self.netns)):
            return Rtnl.open()

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

    def iproute(self, body: Callable[[IPRoute], T]) -> T:
        """`body(ipr)` with a warm pyroute2 socket in the node's namespace (cold paths)."""
        return self._run(body)

    def call(self, body: Callable[[], T]) -> T:
        """`body()` on a thread inside the node's namespace: a process it starts starts there too."""
        return self._pool.submit(body).result()

    def close(self) -> None:
        self._pool.shutdown()
        self._rtnl.close()

    def default_route_ifname(self) -> str:
        with self._rtnl.socket() as nl:
            oif = nl.default_route_oif()
            if oif is None:
                raise NetlinkFailure(f"no default route in {self._where()} to pick a master from; set master")
            return nl.link_by_index(oif).name

    def uplink(self, name: str | None = None) -> Uplink:
        """The master interface: `name`, or the interface of the default route.

        Read afresh on every call (two raw requests, ~0.1 ms): no cache to go stale when the
        uplink's address or MTU changes."""
        name = name or self.default_route_ifname()
        with self._rtnl.socket() as nl:
            link = nl.link(name)
            if link is None:
                raise NetlinkFailure(f"failed to lookup master {name!r} in {self._where()}: no such interface")
            addrs, addrs6 = nl.addresses(link.index), nl.addresses(link.index, socket.AF_INET6)
        return Uplink(name=name, index=link.index, mtu=link.mtu, mac=link.mac, ip=addrs[0] if addrs else None,
                      ip6=addrs6[0] if addrs6 else None)

    def create_child(self, *, uplink: Uplink, spec: LinkSpec, pod_netns: str, tmp_name: str) -> None:
        """A macvlan/ipvlan child of the uplink, created directly inside the pod's namespace.

        It carries a temporary name: the final name (e.g. eth0) usually exists in the node's
        namespace, and a rename in the pod's namespace avoids the clash (as the reference plugin does).
        """
        fd = _open_netns(pod_netns)
        try:
            with self._rtnl.socket() as nl:
                nl.add_child(kind=spec.kind, mode=_mode_number(spec), parent=uplink.index, name=tmp_name,
                             mtu=spec.mtu, mac=spec.mac if spec.kind == "macvlan" else None, netns_fd=fd,
                             what=f"failed to create {spec.kind} on {uplink.name}")
        except RtnlError as exc:
            if spec.kind == "ipvlan" and exc.errno in (errno.EOPNOTSUPP, errno.ENOENT):
                raise NoIpvlan() from None
            raise NetlinkFailure(str(exc)) from None
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
            quiet_ipv6(name)  # this worker thread is in the node's namespace
            ipr.link("set", index=index, state="up")
            return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))

        return self._run(body)

    def host_routes(self, shim: str) -> set[str]:
        """The pod IPs the shim has host routes (/32, /128) to."""
        def body(ipr: IPRoute) -> set[str]:
            index = _index(ipr, shim)
            if index is None:
                return set()
            return {r.get_attr("RTA_DST") for family, full in ((socket.AF_INET, 32), (socket.AF_INET6, 128))
                    for r in ipr.get_routes(family=family, oif=index, table=254) if r["dst_len"] == full}

        return self._run(body)

    def addresses(self) -> list[str]:
        """Every address of the node's namespace (both families), on any link: the node's own
        addresses, which its pods reach through the shim (node_agent/shimroutes.py)."""
        def body(ipr: IPRoute) -> list[str]:
            return [str(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()]

        return self._run(body)

    def add_host_route(self, shim: str, *, ip: str, mac: str, src: str | None) -> None:
        """A host route (/32, /128) to the pod through the shim from the node's address `src` of the
        same family, and a permanent neighbour entry (no ARP or ND needed to start)."""
        with self._rtnl.socket() as nl:
            index = nl.index(shim)
            if index is None:
                raise NetlinkFailure(f"host shim {shim} is missing from {self._where()}")
            nl.route(_host(ip), oif=index, scope=_host_scope(ip), prefsrc=src)
            nl.neighbour(ip, index=index, mac=mac)

    def delete_host_route(self, shim: str, *, ip: str) -> None:
        with self._rtnl.socket() as nl:
            index = nl.index(shim)
            if index is None:
                return
            with contextlib.suppress(RtnlError):  # already gone
                nl.route(_host(ip), oif=index, scope=_host_scope(ip), delete=True)
            with contextlib.suppress(RtnlError):
                nl.neighbour(ip, index=index)

    def _where(self) -> str:
        return f"netns {self.netns}" if self.netns else "the node's netns"


def _host(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def _host_scope(ip: str) -> int:
    return 0 if ":" in ip else SCOPE_LINK  # IPv6 routes have no scope of their own


def _child_kwargs(uplink: Uplink, spec: LinkSpec) -> dict[str, object]:
    """pyroute2's arguments for a macvlan/ipvlan child of `uplink` (name and namespace aside)."""
    if spec.kind == "macvlan":
        return {"kind": "macvlan", "link": uplink.index, "macvlan_mode": spec.mode,
                **({"address": spec.mac} if spec.mac else {})}
    return {"kind": "ipvlan", "link": uplink.index, "ipvlan_mode": IPVLAN_MODES[spec.mode]}


def _mode_number(spec: LinkSpec) -> int:
    return (MACVLAN_MODES if spec.kind == "macvlan" else IPVLAN_MODES)[spec.mode]


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsGone(f"netns {path} does not exist") from None


class PodNetns:
    """Netlink inside one pod's namespace for the length of one request.

    A raw socket for ADD's and DEL's steps (~50 us to open); pyroute2 only for CHECK's reads, opened
    when first needed. No socket outlives the request: one would keep the pod's namespace alive."""

    def __init__(self, path: str) -> None:
        self.path = path
        with entered(path):
            self.nl = Rtnl.open()
        self._ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = open_iproute(self.path)
        return self._ipr

    def __enter__(self) -> PodNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.nl.close()
        if self._ipr is not None:
            self._ipr.close()

    def has(self, ifname: str) -> bool:
        return self.nl.index(ifname) is not None

    def delete(self, ifname: str) -> bool:
        """Delete `ifname`; False when it was not there."""
        index = self.nl.index(ifname)
        if index is None:
            return False
        try:
            self.nl.delete_link(index, what=f"delete {ifname} in netns {self.path}")
        except RtnlError as exc:
            if exc.errno != errno.ENODEV:
                raise
        return True

    def configure(self, tmp_name: str, *, ifname: str, mac: str | None, addresses: list[str], routes: list[Route],
                  neighbours: dict[str, str], link_local: str | None = None, accept_ra: bool = True) -> None:
        """Rename the new link (and give it `mac`: it was made before the MAC was known), then
        arp_notify, IPv4 addresses, up, IPv6 addresses, routes and static neighbours.

        With an IPv6 address the link makes no address of its own (addr_gen_mode none: in ipvlan
        every pod has its node's MAC, so EUI-64 link-locals would collide) and gets exactly
        `link_local`, the one the switch lets it send from. Both skip duplicate address detection
        (nodad): the controller hands an address to one pod only and the switch drops anyone else
        claiming it, so DAD could only keep the address tentative, unusable, for a second after
        ADD returned. Autoconf is off (a SLAAC address would be dropped as spoofed); `accept_ra`
        False when the pool gives the gateway, so a router's RA adds no second default route."""
        nl, where = self.nl, f"in netns {self.path}"
        index = nl.index(tmp_name)
        if index is None:
            raise NetlinkFailure(f"link {tmp_name} vanished from netns {self.path}")
        nl.set_link(index, name=ifname, mac=mac, what=f"rename {tmp_name} to {ifname} {where}")
        ipv4 = [cidr for cidr in addresses if ":" not in cidr]
        ipv6 = [cidr for cidr in addresses if ":" in cidr]
        if ipv6 and not link_local:
            raise NetlinkFailure(f"{ifname} {where}: an IPv6 address needs its link-local address")
        with entered(self.path):
            _write_sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/arp_notify", "1")
            if ipv6:
                quiet_ipv6(ifname, accept_ra=accept_ra)
        for cidr in ipv4:
            address, prefix = cidr.split("/")
            nl.add_address(index, address, int(prefix), what=f"add {cidr} to {ifname} {where}")
        nl.set_link(index, up=True, what=f"bring {ifname} up {where}")
        for cidr in [*ipv6, f"{link_local}/64"] if ipv6 else []:
            address, prefix = cidr.split("/")
            nl.add_address(index, address, int(prefix), nodad=True, what=f"add {cidr} to {ifname} {where}")
        for route in routes:
            nl.route(route.dst, oif=index, gateway=route.gw, scope=0 if route.gw or ":" in route.dst else SCOPE_LINK)
        for ip, lladdr in neighbours.items():
            nl.neighbour(ip, index=index, mac=lladdr)

    def read(self, ifname: str) -> PodLink | None:
        index = _index(self.ipr, ifname)
        if index is None:
            return None
        link = self.ipr.get_links(index)[0]
        kind, data = _kind_data(link)
        modes = {v: k for k, v in (MACVLAN_MODES if kind == "macvlan" else IPVLAN_MODES).items()}
        mode = data.get("IFLA_MACVLAN_MODE" if kind == "macvlan" else "IFLA_IPVLAN_MODE")
        mode = mode if isinstance(mode, str) or mode is None else modes.get(mode)  # pyroute2 names some modes
        addrs = [a for family in (socket.AF_INET, socket.AF_INET6) for a in self.ipr.get_addr(index=index, family=family)]
        routes = [r for family in (socket.AF_INET, socket.AF_INET6)
                  for r in self.ipr.get_routes(family=family, oif=index, table=254)]
        return PodLink(
            ifname=ifname, kind=kind, mode=mode,
            mac=link.get_attr("IFLA_ADDRESS"), mtu=link.get_attr("IFLA_MTU"),
            up=bool(link["flags"] & 1),
            addresses=tuple(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in addrs),
            routes=tuple(Route(dst=f"{r.get_attr('RTA_DST') or _ANY[r['family']]}/{r['dst_len']}",
                               gw=r.get_attr("RTA_GATEWAY")) for r in routes),
        )

    def mac(self, ifname: str) -> str:
        link = self.nl.link(ifname)
        if link is None:
            raise NetlinkFailure(f"link {ifname} vanished from netns {self.path}")
        return link.mac


_ANY = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


def quiet_ipv6(ifname: str, *, accept_ra: bool = False) -> None:
    """IPv6 on `ifname` (in the calling thread's namespace) with no address or route of its own
    making: no link-local generated, no SLAAC, RAs only if `accept_ra`; then enabled, which a
    namespace may have disabled by default. In this order: enabled first, it would make a
    link-local at once. A kernel without IPv6 has no such settings: nothing to do."""
    conf = f"/proc/sys/net/ipv6/conf/{ifname}"
    if not os.path.isdir(conf):
        if os.path.isdir("/proc/sys/net/ipv6"):
            raise NetlinkFailure(f"no IPv6 settings for {ifname}")
        return
    for key, value in (("addr_gen_mode", "1"), ("autoconf", "0"), ("accept_ra", "1" if accept_ra else "0"),
                       ("disable_ipv6", "0")):
        _write_sysctl(f"{conf}/{key}", value)


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
