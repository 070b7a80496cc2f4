"""Network namespaces and veth cables for the one-machine rig, through pyroute2.

The rig never moves its own process into another namespace: netlink calls name the namespace
(`IPRoute(netns=...)`), and commands that must run inside one go through `ip netns exec`.
Nothing here touches the host namespace beyond creating the namespace files in /run/netns.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.netlink import allow_slow_netns_helper

allow_slow_netns_helper()

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create(name: str) -> None:
    """Create namespace `name` with its loopback up and IPv6 off (keeps the segment quiet)."""
    netns.create(name)
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    set_sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
    set_sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")


def remove(name: str) -> None:
    """Remove namespace `name`; a namespace that is already gone is fine."""
    if exists(name):
        netns.remove(name)


def list_names(prefix: str) -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def set_sysctl(name: str, key: str, value: str) -> None:
    run(name, ["sysctl", "-q", "-w", f"{key}={value}"])


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `name`."""
    return ["ip", "netns", "exec", name, *argv]


def run(name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside namespace `name`, capturing its output."""
    proc = subprocess.run(exec_argv(name, argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"in netns {name}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def add_veth(*, ns_a: str, name_a: str, ns_b: str, name_b: str, final_b: str | None = None) -> None:
    """A cable: veth `name_a` in `ns_a` to `name_b` in `ns_b`, both up.

    The peer is created under a unique name and renamed inside its namespace to `final_b` (e.g.
    "eth0"), since the final name may exist in the namespace it was created in.
    """
    with IPRoute(netns=ns_a) as ipr:
        ipr.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": ns_b})
        ipr.link("set", index=ipr.link_lookup(ifname=name_a)[0], state="up")
    with IPRoute(netns=ns_b) as ipr:
        index = ipr.link_lookup(ifname=name_b)[0]
        if final_b:
            ipr.link("set", index=index, ifname=final_b)
        ipr.link("set", index=index, state="up")


def add_tap(ns: str, name: str) -> None:
    """A persistent tap `name` in `ns`, up: a User-Mode Linux instance started in `ns` opens it."""
    run(ns, ["ip", "tuntap", "add", "dev", name, "mode", "tap"], timeout=10)
    run(ns, ["ip", "link", "set", name, "up"], timeout=10)


def add_macvlan(ns: str, master: str, *, name: str, into: str, final: str) -> None:
    """A bridge-mode macvlan child of `master` (in `ns`), moved into `into` and renamed `final`, up."""
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=name, kind="macvlan", link=ipr.link_lookup(ifname=master)[0], macvlan_mode="bridge")
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=into)
    with IPRoute(netns=into) as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, ifname=final)
        ipr.link("set", index=index, state="up")


def configure(name: str, ifname: str, *, cidr: str | None = None, mac: str | None = None) -> str:
    """Give `ifname` in namespace `name` an address and/or MAC; return its MAC."""
    with IPRoute(netns=name) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        if mac:
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, address=mac)
            ipr.link("set", index=index, state="up")
        if cidr:
            address, prefixlen = cidr.split("/")
            with contextlib.suppress(NetlinkError):  # EEXIST: already configured
                ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
        return str(ipr.get_links(index)[0].get("IFLA_ADDRESS"))


def configure_ipv6(name: str, ifname: str, cidr: str, *, link_local: str) -> None:
    """Give `ifname` in namespace `name` (whose IPv6 `create` turned off) IPv6: the address `cidr`
    and exactly the link-local `link_local`, both usable at once (nodad), no other address made
    by the kernel and no router advertisement taken: what the switch's IPv6 port security allows
    a node to send from (its registered address and that link-local)."""
    for key, value in (("addr_gen_mode", "1"), ("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "0")):
        set_sysctl(name, f"net.ipv6.conf.{ifname}.{key}", value)
    for address in (cidr, f"{link_local}/64"):
        run(name, ["ip", "-6", "addr", "replace", address, "dev", ifname, "nodad"])


def tx_checksum_off(name: str, ifname: str) -> None:
    """`ethtool -K ifname tx off` inside namespace `name`: the kernel then fills in TCP and UDP
    checksums itself before a frame leaves `ifname`.

    Why the rig needs it: with offload on, a veth hands its peer frames whose checksum is still to
    be filled in (CHECKSUM_PARTIAL), which is fine while the frame stays in a kernel. Open vSwitch's
    userspace datapath reads the peer through a packet socket and forwards the bytes as they are,
    so the receiver gets a wrong checksum and drops the segment: pings pass, TCP and UDP do not.
    Children of the link (macvlan, ipvlan pods) need nothing: what they send leaves through it, and
    the kernel checksums in software for a lower device that does not offload."""
    with _ethtool(name) as ethtool:
        features = ethtool.get_features(ifname)
        for feature_name, feature in features.features.items():
            if feature_name.startswith("tx-checksum") and feature.available:
                feature.enable = False
        ethtool.set_features(ifname, features)


def tx_checksumming(name: str, ifname: str) -> bool:
    """Whether `ifname` in namespace `name` leaves TCP/UDP checksums to the device (`ethtool -k`'s
    tx-checksumming)."""
    with _ethtool(name) as ethtool:
        return bool(ethtool.get_offload_flags(ifname)["tx-checksumming"])


def _ethtool(name: str) -> Ethtool:
    """pyroute2's ethtool, its sockets made inside namespace `name` (they act where they were made)."""
    with entered(name):
        return Ethtool()


def set_link_up(name: str, ifname: str, *, up: bool) -> None:
    """`ip link set ifname up|down` in namespace `name`: down on a veth end is a carrier loss at its peer."""
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up" if up else "down")


def operstate(name: str, ifname: str) -> str:
    """The kernel's operational state of `ifname` in namespace `name` ("UP", "DOWN", "LOWERLAYERDOWN")."""
    with IPRoute(netns=name) as ipr:
        return str(ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("IFLA_OPERSTATE"))


def delete_link(name: str, ifname: str) -> None:
    """Delete `ifname` in namespace `name`; a missing link or namespace is fine."""
    if not exists(name):
        return
    with IPRoute(netns=name) as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside namespace `name` (for creating sockets there).

    setns(2) changes only the calling thread; a socket keeps the namespace it was created in.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(own)
        os.close(target)
        os.close(own)


def _setns(fd: int) -> None:
    """setns(2) for a network namespace (os.setns arrives only in Python 3.12)."""
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def connect_tcp(name: str, host: str, port: int, timeout: float = 10) -> socket.socket:
    """A TCP connection made from inside namespace `name`."""
    with entered(name):
        return socket.create_connection((host, port), timeout=timeout)
