"""PortRole.LINK: an inter-switch port passes unchecked like a trusted one, records nothing in
`seen`, and its (remote) placements get responder and forward flows only."""

from __future__ import annotations

from dataclasses import replace

from ofsim import arp_request, ipv4, walk
from ofstates import N2, P1, PORT_N1, PORT_N2, two_node_state

from openflow.model import Placement, PortRole, SwitchPort
from openflow.pipeline import DesiredFlows, desired_flows
from openflow.tables import INGRESS

LINK = 7
REMOTE = "02:00:c6:12:02:01"  # a pod on another switch, reached through port LINK


def state_with_link(**changes: object):  # type: ignore[no-untyped-def]
    base = two_node_state()
    return replace(base, ports=(*base.ports, SwitchPort(LINK, PortRole.LINK)),
                   placements=(*base.placements, Placement("198.18.0.31", REMOTE, LINK, "default/far")), **changes)


def test_frames_from_a_link_port_pass_unchecked_and_are_not_recorded() -> None:
    frame = ipv4(src=REMOTE, dst=P1, ip_src="198.18.0.31", ip_dst="198.18.0.11")
    result = walk(desired_flows(state_with_link()), frame, in_port=LINK)
    assert result.is_output(PORT_N1)
    assert not result.learned  # nothing recorded in `seen`
    arp = walk(desired_flows(state_with_link()), arp_request(src=REMOTE, spa="198.18.0.31", tpa="198.18.0.99"),
               in_port=LINK)
    assert not arp.learned


def test_remote_placement_gets_responder_and_forward_flows_only() -> None:
    flows = desired_flows(state_with_link())
    remote = [flow for flow in flows if "198.18.0.31" in str(flow.match) or REMOTE in str(flow.match)]
    assert remote and not [flow for flow in remote if flow.table == INGRESS]
    answer = walk(flows, arp_request(src=N2, spa="198.18.0.2", tpa="198.18.0.31"), in_port=PORT_N2)
    assert answer.is_output(PORT_N2) and answer.only.frame["arp_sha"] == REMOTE
    forward = walk(flows, ipv4(src=N2, dst=REMOTE, ip_src="198.18.0.2", ip_dst="198.18.0.31"), in_port=PORT_N2)
    assert forward.is_output(LINK)


def test_a_port_turning_into_a_link_rebuilds_the_incremental_set() -> None:
    desired = DesiredFlows()
    trusted = replace(state_with_link(), ports=(*two_node_state().ports, SwitchPort(LINK, PortRole.TRUSTED)))
    desired.update(trusted)
    desired.update(state_with_link())
    assert desired.flows == desired_flows(state_with_link())
