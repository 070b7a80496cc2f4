"""The edge's identity rules: where a node may be learned, which addresses a node may claim, which
MAC a pod may take. Pure: the service passes what it knows (its memory, the config, what switches
report as seen) and gets back the refusal to raise or to log; nothing here does I/O.

Where a node is (issue 16: "a pod can move a node"). A node's uplink port comes from the config
(`nodes.<n>.dpid`/`port`: nothing on the wire can change it) or is learned from the first frame its
MAC sends. Learning accepts a port only when
  * no other node holds it (pinned there in the config, or located there): every pod sits behind
    its own node's port, and pods are placed only on located nodes, so no pod can ever send from a
    port that is not held; a pod's forged frame therefore never locates another node, and
  * the node has no pods yet, or is not located: once pods are placed on a located node, its place
    is final (moving it would move them all); re-registering with a new MAC (the node's own,
    authenticated act) forgets the place.
What this leaves open: a host on a free, unpinned, untrusted port claiming an unlocated node's MAC
before the node speaks. Pinning the port closes it, and is what production configs should do.

What a node may claim: not a pool's gateway or a route's gateway, not a subnet's network or
broadcast address, not an address excluded from a pool (reserved for someone the operator knows)
unless the config names it as this node's `ip`; not a MAC or IP the config pins to another node;
and not a MAC or ARP sender IP its switch has seen on a trusted port (a router's, an external
host's), unless the config pins it to this node.

Which MAC a pod may take: a unicast one, locally administered (the 02 bit) unless the config sets
`allow_global_macs` (a vendor MAC belongs to some NIC somewhere); not a node's, not another pod's,
and not one any switch has seen on a trusted port lately. (With several switches, a pod's own frames
cross the inter-switch links, which are trusted ports, and are recorded there: a new pod asking for
a departed pod's MAC within the record's 300 s is refused; a retried ADD of the same pod is not asked.)
Derived MACs (ipam.derive_mac, the common case) are not asked: the switches are asked only on the
rare path of a requested MAC.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping

import netaddr

from controller.config import NodeConfig, PoolConfig
from controller.logs import kv

LOG = logging.getLogger("underlay.edge")
Seen = Mapping[int, tuple[int, ...]]  # dpid -> trusted ports where a switch saw a MAC or an ARP sender IP


def location_refusal(node: str, *, at: tuple[int, int], holder: str | None, located: bool, pods: int) -> str | None:
    """Why a frame of `node`'s MAC at `at` (dpid, port) must not locate it, or None to accept."""
    if holder is not None:
        return f"that port is node {holder}'s"
    if located and pods:
        return f"node {node} is located and has {pods} pod(s): its place is final"
    return None


def port_holder(at: tuple[int, int], *, besides: str, pins: Mapping[str, NodeConfig],
                located: Mapping[str, tuple[int | None, int | None]]) -> str | None:
    """The node other than `besides` that holds port `at`: pinned there, or located there."""
    for name, pin in pins.items():
        if name != besides and (pin.dpid, pin.port) == at:
            return name
    return next((name for name, where in located.items() if name != besides and where == at), None)


def node_address_refusal(name: str, ip: str, *, pools: Iterable[PoolConfig], pinned_ip: str | None) -> str | None:
    """Why node `name` may not claim `ip` for its uplink, by the pools' config, or None."""
    address = netaddr.IPAddress(ip)
    for pool in pools:
        if any(ip == family.gateway for family in pool.families):
            return f"{ip} is pool {pool.name}'s gateway"
        route = next((route for route in pool.routes if route.gw == ip), None)
        if route is not None:
            return f"{ip} is the gateway of pool {pool.name}'s route to {route.dst}"
        for family in pool.families:
            subnet = netaddr.IPNetwork(family.subnet)
            if family.version == 6 and subnet.size > 1 and address == subnet.network:
                return f"{ip} is the subnet-router anycast address of pool {pool.name}'s subnet6 {family.subnet}"
            if family.version == 4 and subnet.size > 2 and address in (subnet.network, subnet.broadcast):
                return f"{ip} is the network or broadcast address of pool {pool.name}'s subnet {family.subnet}"
        if ip != pinned_ip and any(address in netaddr.IPNetwork(cidr) for cidr in pool.exclude):
            return (f"{ip} is excluded from pool {pool.name} (reserved for a host the operator knows); "
                    f"if it is this node's, pin it as nodes.{name}.ip in the controller's config")
    return None


def pin_refusal(name: str, *, mac: str, ip: str, pins: Mapping[str, NodeConfig]) -> str | None:
    """Why the config's pins forbid node `name` to claim (mac, ip), or None."""
    own = pins.get(name)
    if own is not None and own.mac is not None and own.mac != mac:
        return f"MAC {mac} is not nodes.{name}.mac ({own.mac}) in the controller's config"
    if own is not None and own.ip is not None and own.ip != ip:
        return f"{ip} is not nodes.{name}.ip ({own.ip}) in the controller's config"
    for other, pin in pins.items():
        if other != name and (pin.mac == mac or pin.ip == ip):
            what = f"MAC {mac}" if pin.mac == mac else ip
            return f"{what} is node {other}'s (pinned in the controller's config)"
    return None


def foreign_mac_refusal(mac: str, *, allow_global: bool) -> str | None:
    """Why a pod may not ask for `mac` whoever holds it (`parse_mac` already refused multicast)."""
    if not allow_global and not int(mac[:2], 16) & 0x02:
        return (f"{mac} is a globally unique (vendor) MAC, which belongs to some NIC; ask for a locally "
                "administered one (second-lowest bit of the first byte set, e.g. 02:...), or set "
                "allow_global_macs in the controller's config")
    return None


def seen_refusal(what: str, seen: Seen) -> str | None:
    """`what` (a MAC or an IP) is in use behind a trusted port, if any switch saw it there."""
    places = [f"switch {dpid:016x} port {port}" for dpid, ports in sorted(seen.items()) for port in ports]
    if not places:
        return None
    return f"{what} is in use on the segment: seen lately on {', '.join(places)} (trusted)"


class Refusals:
    """Refused identity claims: counted by kind, logged at WARNING once per distinct claim per
    `quiet` seconds (a forged frame can arrive 20 times a second; the count keeps them all)."""

    def __init__(self, *, now: Callable[[], float], quiet: float = 60.0) -> None:
        self.now, self.quiet = now, quiet
        self.counts: Counter[str] = Counter()
        self._logged: dict[Hashable, tuple[float, int]] = {}  # claim -> (last logged, refused since)

    def refuse(self, kind: str, claim: Hashable, event: str, **fields: object) -> None:
        self.counts[kind] += 1
        now = self.now()
        last, since = self._logged.get(claim, (None, 0))
        if last is not None and now - last < self.quiet:
            self._logged[claim] = (last, since + 1)
            return
        self._logged[claim] = (now, 0)
        LOG.warning(kv(event, **fields, **({"repeated": since} if since else {})))
