"""Shared states for the openflow tests: two nodes, macvlan and ipvlan pods, a trusted uplink.

A plain module (not a conftest) so tests can import the names; test modules here have unique basenames
because tests/ has no __init__.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from openflow.model import Placement, PortRole, SwitchPort, SwitchState, UnknownDestination

COOKIE = 0x0DE1_A700_0000_0001
N1, N2 = "02:00:c6:12:00:01", "02:00:c6:12:00:02"      # node uplink MACs
P1, P2 = "02:00:c6:12:01:11", "02:00:c6:12:01:12"      # macvlan pod MACs
ROUTER = "02:00:c6:12:00:fe"
LEARN = "02:00:c6:12:00:03"                             # a node whose port is not known yet
PORT_N1, PORT_N2, PORT_ROUTER = 1, 2, 9


def two_node_state(**changes: Any) -> SwitchState:
    """n1 and n2 with one macvlan pod (own MAC) and one ipvlan pod (node MAC) each."""
    state = SwitchState(
        dpid=1,
        cookie=COOKIE,
        ports=(SwitchPort(PORT_N1, PortRole.NODE), SwitchPort(PORT_N2, PortRole.NODE),
               SwitchPort(PORT_ROUTER, PortRole.TRUSTED)),
        placements=(
            Placement("198.18.0.1", N1, PORT_N1, "node/n1"),
            Placement("198.18.0.2", N2, PORT_N2, "node/n2"),
            Placement("198.18.0.11", P1, PORT_N1, "default/mac-1"),
            Placement("198.18.0.12", P2, PORT_N2, "default/mac-2"),
            Placement("198.18.0.21", N1, PORT_N1, "default/ipv-1"),
            Placement("198.18.0.22", N2, PORT_N2, "default/ipv-2"),
        ),
        learn_macs=(LEARN,),
    )
    return replace(state, **changes)


# random states for property tests ------------------------------------------------------------
PORTS = (1, 2, 3, 4)


def node_mac(port: int) -> str:
    return f"02:00:c6:12:00:{port:02x}"


def pod_mac(host: int) -> str:
    return f"02:00:c6:12:01:{host:02x}"


def placement(host: int, port: int, ipvlan: bool, vlan: int | None = None, family: int = 4) -> Placement:
    """Pod `host` on node `port`: ipvlan pods answer at the node's MAC, macvlan ones at their own;
    `vlan` (what VLAN pools will set) makes its frames tagged; `family` 6 gives it fd00::<host>."""
    ip = f"198.18.0.{host}" if family == 4 else f"fd00::{host:x}"
    return Placement(ip, node_mac(port) if ipvlan else pod_mac(host), port, f"pod/{host}", vlan)


VLANS = st.one_of(st.none(), st.sampled_from((1, 100, 4094)))
FAMILIES = st.sampled_from(((4,), (6,), (4, 6)))  # IPv4, IPv6, dual stack (two placements, one MAC)
placements = st.dictionaries(st.integers(10, 40),
                             st.tuples(st.sampled_from(PORTS), st.booleans(), VLANS, FAMILIES), max_size=12) \
    .map(lambda pods: tuple(placement(host, port, ipvlan, vlan, family)
                            for host, (port, ipvlan, vlan, families) in pods.items() for family in families))

states = st.builds(
    SwitchState,
    dpid=st.just(1),
    cookie=st.just(COOKIE),
    ports=st.lists(st.sampled_from((*PORTS, 9)), unique=True).map(
        lambda ports: tuple(SwitchPort(p, PortRole.TRUSTED if p == 9 else PortRole.NODE) for p in sorted(ports))),
    placements=placements,
    unknown_destination=st.sampled_from(UnknownDestination),
    learn_macs=st.lists(st.sampled_from([node_mac(p) for p in (5, 6, 7)]), unique=True).map(tuple),
)


def dual_stack_state(**changes: Any) -> SwitchState:
    """`two_node_state` with an IPv6 address for every node and pod: fd00::<the IPv4 host number>."""
    state = two_node_state()
    six = tuple(replace(p, ip=f"fd00::{p.ip.rsplit('.', 1)[1]}") for p in state.placements)
    return replace(state, **{"placements": (*state.placements, *six), **changes})
