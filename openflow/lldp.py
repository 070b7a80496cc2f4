"""The flows that bring the controller's LLDP frames back to it, one per inter-switch link port.

The controller sends an LLDP frame out of every link port about once a second
(controller/links.py); the switch at the far end must hand it to the controller and nothing else:
a flow in `ingress`, above every other flow there, matching the link port and the LLDP ethertype,
output CONTROLLER. Only link ports have one: an LLDP frame from a node port meets port security
(no allow flow matches it) and is dropped like any other frame a pod should not send.

The pipeline adds `punt_flows(<its LINK ports>, state.cookie)` to a switch's fixed flows, so they
are in the desired set and a restart finds them in place (zero flow-mods).
"""

from __future__ import annotations

from collections.abc import Iterable

from openflow import cookies
from openflow.cookies import Purpose
from openflow.flows import CONTROLLER, Flow, Output, make_flow
from openflow.tables import INGRESS

ETH_TYPE_LLDP = 0x88CC
PRIO_LLDP = 1000  # above everything in ingress (the pipeline's highest is 210)
LLDP_MAX_LEN = 256  # bytes sent to the controller: our frames are ~60, a system name at most 255 more


def punt_flows(ports: Iterable[int], tag: int) -> tuple[Flow, ...]:
    """One flow per link port: its LLDP frames to the controller (cookie: TOPOLOGY, the port)."""
    return tuple(make_flow(INGRESS, PRIO_LLDP, {"in_port": port, "eth_type": ETH_TYPE_LLDP},
                           actions=(Output(CONTROLLER, LLDP_MAX_LEN),),
                           cookie=cookies.make(tag, Purpose.TOPOLOGY, cookies.port_owner(port)))
                 for port in sorted(set(ports)))


def is_topology(cookie: int) -> bool:
    """A packet-in's cookie says one of these flows sent it."""
    return cookies.decode(cookie).purpose is Purpose.TOPOLOGY
