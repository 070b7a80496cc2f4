"""The flows that make one switch a member of a fabric: link ports, and flooding along the tree only.

A switch with inter-switch ports (`PortRole.LINK`) must never flood with NORMAL: OVS would send a
broadcast out of every port, and a redundant topology (two spines, a triangle) would carry it round
for ever. So, on a fabric switch, broadcast and unknown traffic are forwarded by explicit flows per
in-port, to the *flood ports* of the switch: its edge ports (node ports), its trusted ports and its
link ports on the loop-free tree (`SwitchState.tree_links`, from controller/topology.py):

ingress    LLDP from a link port → CONTROLLER (openflow.lldp)            prio 1000
           frame from a link port → l2 (unchecked: the edge of the switch it
           came from checked it; nothing recorded in `seen`; not answered:
           what crosses a link was not answered where it entered, a pod's
           own probe or announcement, or for an address nobody has)     prio 100
l2         broadcast/multicast from flood port P → every other flood port prio 50
           broadcast/multicast from a link port off the tree → drop     prio 50
           unknown unicast from flood port P → every other trusted and
           tree link port (never a node port: every pod and node is
           known, so what is unknown lives behind a trusted port)        prio 10
           anything else → drop (no NORMAL anywhere)                     prio 0

Known destinations are not here: each switch holds an exact `eth_dst` flow for every placement of
the fabric (openflow.pipeline), a remote one pointing at the next-hop link port towards its switch
(shortest path, not the tree), and the responder answers ARP/ND for every pod on the requester's own
switch. Flows here are per port, never per pod or per pair of switches: a switch carries
O(ports) of them, whatever the number of pods and switches.

A switch without link ports is not a fabric switch: its flows stay exactly those of a single switch
(NORMAL for broadcast and unknown unicast), so enabling the feature without links changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from openflow import cookies, lldp
from openflow.cookies import Purpose
from openflow.flows import MULTICAST, Flow, Output, make_flow
from openflow.model import PortRole, SwitchState, UnknownDestination
from openflow.tables import INGRESS, L2

PRIO_LINK = 100  # as a trusted port's ingress flow (openflow.pipeline.PRIO_TRUSTED)
PRIO_FLOOD = 50  # as the single switch's broadcast flow
PRIO_UNKNOWN = 10


def is_fabric(state: SwitchState) -> bool:
    """Whether `state` is one switch of several: it has inter-switch ports."""
    return any(port.role is PortRole.LINK for port in state.ports)


def fabric_flows(state: SwitchState) -> Iterator[Flow]:
    """The link ports' ingress flows and the per-in-port flood flows (nothing for a lone switch)."""
    if not is_fabric(state):
        return
    links = _ports(state, PortRole.LINK)
    tree = links & frozenset(state.tree_links)
    flood = _ports(state, PortRole.NODE) | _ports(state, PortRole.TRUSTED) | tree
    beyond = _ports(state, PortRole.TRUSTED) | tree  # where unknown destinations may live
    unknown = state.unknown_destination is UnknownDestination.NORMAL
    yield from lldp.punt_flows(links, state.cookie)  # the controller's LLDP frames back to it
    for port in sorted(links):
        yield make_flow(INGRESS, PRIO_LINK, {"in_port": port}, goto=L2,
                        cookie=_cookie(state, Purpose.TRUSTED, port))
    for port in sorted(links - tree):
        yield make_flow(L2, PRIO_FLOOD, {"in_port": port, "eth_dst": MULTICAST}, cookie=_cookie(state, Purpose.FLOOD, port))
    for port in sorted(flood):
        yield make_flow(L2, PRIO_FLOOD, {"in_port": port, "eth_dst": MULTICAST}, actions=_out(flood - {port}),
                        cookie=_cookie(state, Purpose.FLOOD, port))
        if unknown and beyond - {port}:
            yield make_flow(L2, PRIO_UNKNOWN, {"in_port": port}, actions=_out(beyond - {port}),
                            cookie=_cookie(state, Purpose.FLOOD, port))


def _ports(state: SwitchState, role: PortRole) -> frozenset[int]:
    return frozenset(port.number for port in state.ports if port.role is role)


def _out(ports: frozenset[int]) -> tuple[Output, ...]:
    return tuple(Output(port) for port in sorted(ports))


def _cookie(state: SwitchState, purpose: Purpose, port: int) -> int:
    return cookies.make(state.cookie, purpose, cookies.port_owner(port))
