"""The flows that bring the controller's LLDP frames back to it, one per inter-switch link port.

The controller sends an LLDP frame out of every link port about once a second
(controller/links.py); the switch at the far end must hand it to the controller and nothing else:
a flow in `ingress`, above every other flow there, matching the link port and the LLDP ethertype,
output CONTROLLER. Only link ports have one; LLDP from any other port is dropped right below it
(tests/security/test_lldp_spoofing.py): a bridge never forwards LLDP (802.1AB), and a host on a
trusted port must not be able to tell the controller what is cabled where.

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
PRIO_LLDP_DROP = 999  # LLDP from any other port: never carried to another switch
LLDP_MAX_LEN = 256  # bytes sent to the controller: our frames are ~60, a system name at most 255 more


def punt_flows(ports: Iterable[int], tag: int) -> tuple[Flow, ...]:
    """One flow per link port: its LLDP frames to the controller (cookie: TOPOLOGY, the port); and
    LLDP from any other port dropped (with link ports only). A trusted port's frames pass unchecked:
    without the drop, a host there could send frames claiming to be a switch port, the fabric would
    carry them to the next switch's link port, and that link would look miscabled (out of use)."""
    ports = sorted(set(ports))
    punts = tuple(make_flow(INGRESS, PRIO_LLDP, {"in_port": port, "eth_type": ETH_TYPE_LLDP},
                            actions=(Output(CONTROLLER, LLDP_MAX_LEN),),
                            cookie=cookies.make(tag, Purpose.TOPOLOGY, cookies.port_owner(port)))
                  for port in ports)
    drop = make_flow(INGRESS, PRIO_LLDP_DROP, {"eth_type": ETH_TYPE_LLDP}, cookie=cookies.make(tag, Purpose.TOPOLOGY))
    return (*punts, drop) if ports else ()


def is_topology(cookie: int) -> bool:
    """A packet-in's cookie says one of these flows sent it."""
    return cookies.decode(cookie).purpose is Purpose.TOPOLOGY
