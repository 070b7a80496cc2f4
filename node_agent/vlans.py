"""The VLAN sub-interfaces `<uplink>.<vid>` that pods of VLAN pools hang off.

A pod of a pool with a VLAN gets its macvlan/ipvlan link as a child of `<uplink>.<vid>`, so the kernel
tags its frames on the way out and the switch admits them in that VLAN only (openflow.pipeline). One
sub-interface per node and VLAN, made by the first pod that needs it and deleted when its last pod
goes: `VlanParents` counts the pods on each, under a lock, so an ADD never finds its parent deleted
under it by the DEL of the previous last pod.

Ours are marked: the alias `underlay: pods of VLAN <vid>`. A sub-interface someone else made (an
operator's `eth0.100`) is used as it is and never deleted. The counts are not kept anywhere: on start
the agent rebuilds them from its attachment records (`restore`), and deletes its own sub-interfaces
no pod uses any more (their last pod went while the agent was down).

Cold path (once per node and VLAN): pyroute2 on the node's netlink workers.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
from collections import Counter
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.netlink import NetlinkFailure, NodeNetlink, Uplink

log = logging.getLogger("underlay.agent")
ALIAS = "underlay: pods of VLAN "
IFNAMSIZ = 15  # the longest interface name the kernel takes


def parent_name(uplink: str, vid: int) -> str:
    """`eth0.100`; an uplink whose name leaves no room for the VID is refused, naming both."""
    name = f"{uplink}.{vid}"
    if len(name) > IFNAMSIZ:
        raise NetlinkFailure(f"VLAN {vid} on {uplink}: {name} is longer than {IFNAMSIZ} characters, the kernel's limit")
    return name


class VlanParents:
    """Each VLAN sub-interface with the number of pods on it (in flight ones included)."""

    def __init__(self, node: NodeNetlink) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._users: Counter[str] = Counter()
        self._pool_vlans: dict[str | None, int | None] = {}

    def expected(self, pool: str | None) -> int | None:
        """The VLAN the last answer for this network config's pool had: an ADD makes its link there
        while the controller allocates, and again elsewhere only when the answer says otherwise."""
        with self._lock:
            return self._pool_vlans.get(pool)

    def learned(self, pool: str | None, vid: int | None) -> None:
        with self._lock:
            self._pool_vlans[pool] = vid

    def acquire(self, uplink: Uplink, vid: int) -> Uplink:
        """`<uplink>.<vid>`, made if missing, up, counted for one more pod."""
        name = parent_name(uplink.name, vid)
        with self._lock:
            index = self.node.iproute(lambda ipr: _ensure(ipr, name, uplink=uplink, vid=vid))
            self._users[name] += 1
        return Uplink(name=name, index=index, mtu=uplink.mtu, mac=uplink.mac, ip=None)

    def release(self, name: str) -> None:
        """One pod fewer on `name`; the last one takes it along (if it is ours)."""
        with self._lock:
            self._users[name] -= 1
            if self._users[name] > 0:
                return
            del self._users[name]
            if self.node.iproute(lambda ipr: _delete_ours(ipr, name)):
                log.info("event=vlan-removed link=%s", name)

    def restore(self, parents: Iterable[str]) -> None:
        """After a restart: the parents of the attachments still there; ours no pod uses go."""
        with self._lock:
            self._users = Counter(parents)
            for name in self.node.iproute(_ours) - set(self._users):
                if self.node.iproute(functools.partial(_delete_ours, name=name)):
                    log.info("event=vlan-removed link=%s reason=no-pods", name)

    def users(self) -> dict[str, int]:
        with self._lock:
            return dict(self._users)


def _ensure(ipr: IPRoute, name: str, *, uplink: Uplink, vid: int) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        try:
            ipr.link("add", ifname=name, kind="vlan", link=uplink.index, vlan_id=vid)
        except NetlinkError as exc:
            reason = "this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q, module 8021q)" \
                if exc.code == errno.EOPNOTSUPP else exc.args[-1]
            raise NetlinkFailure(f"failed to create VLAN {vid} link {name} on {uplink.name}: {reason}") from None
        found = ipr.link_lookup(ifname=name)
        ipr.link("set", index=found[0], ifalias=f"{ALIAS}{vid}")
        log.info("event=vlan-added link=%s vid=%d", name, vid)
    else:
        kind, data = _vlan_of(ipr, found[0])
        if kind != "vlan" or data != vid:
            raise NetlinkFailure(f"{name} exists and is not VLAN {vid} of {uplink.name}")
    ipr.link("set", index=found[0], state="up")
    return int(found[0])


def _vlan_of(ipr: IPRoute, index: int) -> tuple[str, int | None]:
    info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
    if info is None:
        return "", None
    data = info.get_attr("IFLA_INFO_DATA")
    return info.get_attr("IFLA_INFO_KIND") or "", None if data is None else data.get_attr("IFLA_VLAN_ID")


def _ours(ipr: IPRoute) -> set[str]:
    return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()
            if str(link.get_attr("IFLA_IFALIAS") or "").startswith(ALIAS)}


def _delete_ours(ipr: IPRoute, name: str) -> bool:
    found = ipr.link_lookup(ifname=name)
    if not found or not str(ipr.get_links(found[0])[0].get_attr("IFLA_IFALIAS") or "").startswith(ALIAS):
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError:
        return False  # gone meanwhile
    return True
