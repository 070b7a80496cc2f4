"""The desired state of one switch, as plain values: what the controller knows, nothing it sends.

`openflow.pipeline.desired_flows(state)` turns a `SwitchState` into the exact set of flows. Every
type here is frozen and ordered, so states and flows compare, hash and sort deterministically.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field


class PortRole(enum.Enum):
    NODE = "node"        # a node's uplink: only what was placed on it may enter
    TRUSTED = "trusted"  # router/external uplinks: pass unchecked, their sources recorded in `seen`
    LINK = "link"        # an inter-switch link: passes unchecked like TRUSTED, but records nothing in
                         # `seen` (a source behind it is another switch's to record, at its edge) and
                         # is never a node's port; remote placements name it as their port


class UnknownDestination(enum.Enum):
    NORMAL = "normal"  # unmanaged hosts on the segment keep working
    DROP = "drop"


@dataclass(frozen=True, order=True)
class SwitchPort:
    number: int
    role: PortRole = field(compare=False)


@dataclass(frozen=True, order=True)
class Placement:
    """One IP (IPv4, or IPv6 in compressed form) on the segment and where it is reachable.

    `mac` is the MAC the IP answers at: the pod's own MAC for macvlan, the node's uplink MAC for
    ipvlan (many placements then share one MAC on one port). A node's own uplink (node IP, node MAC)
    is a placement too. `owner` names it in logs and flow comments ("default/web-0", "node/n1").
    `vlan` is the VID its frames carry on its port; None (what the controller places today) means
    untagged: a tagged frame from a node port is dropped, whatever MAC and IP it carries. (VLAN pools
    are a later feature: they set `vlan`, and their l2/ARP treatment of tags, on the placement.)
    A dual-stack pod is two placements with the same MAC and port, one per family.
    """

    ip: str
    mac: str
    port: int
    owner: str = field(default="", compare=False)
    vlan: int | None = None


@dataclass(frozen=True)
class SwitchState:
    dpid: int
    cookie: int
    ports: tuple[SwitchPort, ...] = ()
    placements: tuple[Placement, ...] | frozenset[Placement] = ()  # order does not matter
    unknown_destination: UnknownDestination = UnknownDestination.NORMAL
    # MACs of registered nodes whose switch port is not known yet: the one thing sent to the
    # controller (truncated), so it can learn the port from the packet-in.
    learn_macs: tuple[str, ...] = ()
    # Its LINK ports on the fabric's loop-free tree: broadcast and unknown traffic go there (and to
    # its edge and trusted ports); its other LINK ports carry known destinations only (openflow.fabric).
    tree_links: tuple[int, ...] = ()


def link_local(ip: str) -> str:
    """The link-local address that goes with the IPv6 address `ip`: fe80::/64 and the low 64 bits
    (the interface identifier) of `ip`, compressed.

    One function for both sides of the contract: the agent configures exactly this address in the
    pod (with `addr_gen_mode` none, so the kernel adds no EUI-64 one), and the switch lets exactly
    this address (besides `ip`) out of the pod's port. Deriving it from the address rather than
    the MAC keeps it right for ipvlan pods, which share their node's MAC."""
    address = ipaddress.ip_address(ip)
    if address.version != 6:
        raise ValueError(f"{ip}: a link-local address exists for an IPv6 address only")
    return ipaddress.IPv6Address(_LINK_LOCAL_PREFIX | int(address) & _INTERFACE_ID).compressed


_LINK_LOCAL_PREFIX = 0xFE80 << 112
_INTERFACE_ID = (1 << 64) - 1
