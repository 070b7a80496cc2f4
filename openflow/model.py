"""The desired state of one switch, as plain values: what the controller knows, nothing it sends.

`openflow.pipeline.desired_flows(state)` turns a `SwitchState` into the exact set of flows. Every
type here is frozen and ordered, so states and flows compare, hash and sort deterministically.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PortRole(enum.Enum):
    NODE = "node"        # a node's uplink: only what was placed on it may enter
    TRUSTED = "trusted"  # router/external uplinks, inter-switch links: pass unchecked


class UnknownDestination(enum.Enum):
    NORMAL = "normal"  # unmanaged hosts on the segment keep working
    DROP = "drop"


@dataclass(frozen=True, order=True)
class SwitchPort:
    number: int
    role: PortRole = field(compare=False)


@dataclass(frozen=True, order=True)
class Placement:
    """One IP on the segment and where it is reachable.

    `mac` is the MAC the IP answers at: the pod's own MAC for macvlan, the node's uplink MAC for
    ipvlan (many placements then share one MAC on one port). A node's own uplink (node IP, node MAC)
    is a placement too. `owner` names it in logs and flow comments ("default/web-0", "node/n1").
    `vlan` is the VID its frames carry on its port; None (what the controller places today) means
    untagged: a tagged frame from a node port is dropped, whatever MAC and IP it carries. (VLAN pools
    are a later feature: they set `vlan`, and their l2/ARP treatment of tags, on the placement.)
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
