"""Which flows concern one address, what the switch lacks of them, and the packets to trace."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
from ofstates import N1, P1, PORT_N1, PORT_N2, PORT_ROUTER, two_node_state

from openflow.model import Placement
from openflow.pipeline import desired_flows
from openflow.tracing import (Concern, FlowView, Kind, Role, Subject, concerning, default_source, drift,
                              find_subject, pod_arp_reply, probes, trusted_ports)

MAC_POD = Subject("198.18.0.11", P1, PORT_N1, "default/mac-1")
IPVLAN_POD = Subject("198.18.0.21", N1, PORT_N1, "default/ipv-1")


def views(**changes: object) -> list[FlowView]:
    return [FlowView.from_flow(flow) for flow in desired_flows(two_node_state(**changes))]


def roles(concerns: tuple[Concern, ...]) -> list[tuple[str, Role]]:
    return [(c.flow.table, c.role) for c in concerns]


def test_a_macvlan_pod_has_port_security_responder_and_forward_flows() -> None:
    found = concerning(views(), MAC_POD)
    assert roles(found) == [("ingress", Role.ADMIT)] * 3 + [("responder", Role.OWNER_PASS),
                                                              ("responder", Role.ANSWER), ("l2", Role.FORWARD)]
    admit = [c.flow for c in found if c.role is Role.ADMIT]
    assert {f.field("arp_spa") for f in admit} == {"198.18.0.11", "0.0.0.0", None}  # its ARP, its probe, its IPv4
    assert all(f.field("in_port") == str(PORT_N1) and f.field("eth_src") == P1 for f in admit)
    (answer,) = [c.flow for c in found if c.role is Role.ANSWER]
    assert f"set_field:{P1}->arp_sha" in answer.actions and answer.actions.endswith("IN_PORT")


def test_an_ipvlan_pod_shares_its_nodes_forward_flow_but_not_its_port_security() -> None:
    found = concerning(views(), IPVLAN_POD)
    (forward,) = [c.flow for c in found if c.role is Role.FORWARD]
    assert forward.field("eth_dst") == N1 and forward.actions == f"output:{PORT_N1}"
    admitted = {c.flow.field("arp_spa") or c.flow.field("ipv4_src") for c in found if c.role is Role.ADMIT}
    assert admitted == {"198.18.0.21", "0.0.0.0"}  # not the node's own 198.18.0.1, same MAC and port


def test_ipv6_flows_are_found_by_address_and_link_local() -> None:
    state = two_node_state()
    six = Placement("fd00:18::11", P1, PORT_N1, "default/mac-1")
    flows = [FlowView.from_flow(f) for f in desired_flows(replace(state, placements=(*state.placements, six)))]
    found = concerning(flows, Subject("fd00:18::11", P1, PORT_N1))
    sources = {c.flow.field("ipv6_src") for c in found if c.role is Role.ADMIT}
    assert {"fd00:18::11", "fe80::11"} <= sources
    assert Role.ANSWER in {c.role for c in found} and Role.GUARD in {c.role for c in found}
    assert not [c for c in found if c.flow.field("arp_tpa")]  # none of its IPv4 twin's


def test_nothing_concerns_an_unplaced_address() -> None:
    assert concerning(views(), Subject("198.18.0.99", "02:00:00:00:00:99", PORT_N2)) == ()


def test_drift_names_the_missing_flows_and_promises_repair() -> None:
    desired = concerning(views(), MAC_POD)
    actual = tuple(c for c in desired if c.role is not Role.ADMIT)
    gap = drift(desired, actual)
    assert [f.table for f in gap.missing] == ["ingress"] * 3 and gap.extra == ()
    assert gap.describe(len(desired)) == "the switch lacks 3 of its 6 desired flows: the controller will repair it"
    assert drift(desired, desired).in_sync


def test_drift_counts_a_flow_with_other_actions_as_missing_and_extra() -> None:
    desired = concerning(views(), MAC_POD)
    forward = next(c for c in desired if c.role is Role.FORWARD)
    moved = Concern(Role.FORWARD, FlowView(forward.flow.table, forward.flow.priority, forward.flow.match,
                                           "output:7", forward.flow.cookie))
    gap = drift(desired, [c for c in desired if c is not forward] + [moved])
    assert gap.missing == (forward.flow,) and gap.extra == (moved.flow,)
    assert "has 1 it should not" in gap.describe(6)


def test_the_sender_on_a_node_port_is_an_address_placed_there() -> None:
    placed = [MAC_POD, IPVLAN_POD, Subject("198.18.0.1", N1, PORT_N1, "node/n1")]
    assert default_source(PORT_N1, placed).ip == "198.18.0.1"  # the lowest address: the node's
    trusted = default_source(PORT_ROUTER, placed)
    assert trusted.port == PORT_ROUTER and trusted.mac == "02:75:6c:00:00:09"


def test_probes_go_there_and_back() -> None:
    source = default_source(PORT_ROUTER)
    arp, there, back = probes(MAC_POD, source)
    assert (arp.kind, arp.expect_port, arp.dst_mac) == (Kind.ARP_REQUEST, PORT_N1, "ff:ff:ff:ff:ff:ff")
    assert (there.in_port, there.expect_port, there.dst_mac) == (PORT_ROUTER, PORT_N1, P1)
    assert (back.in_port, back.expect_port, back.src_ip) == (PORT_N1, PORT_ROUTER, "198.18.0.11")
    assert arp.ofproto_flow() == (f"in_port={PORT_ROUTER},dl_src={source.mac},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
                                  f"arp_spa={source.ip},arp_sha={source.mac},arp_tpa=198.18.0.11,"
                                  "arp_tha=00:00:00:00:00:00")
    assert pod_arp_reply(MAC_POD, source).ofproto_flow().endswith(f"arp_tpa={source.ip},arp_tha={source.mac}")
    assert there.describe() == f"IPv4 {source.ip} -> 198.18.0.11 from port {PORT_ROUTER}"


@pytest.mark.parametrize("packet", range(4))
def test_ovs_ofctl_accepts_every_probe(packet: int) -> None:
    """The flow syntax is Open vSwitch's own: ovs-ofctl parses it (no switch needed)."""
    source = default_source(PORT_ROUTER)
    flow = [*probes(MAC_POD, source), pod_arp_reply(MAC_POD, source)][packet].ofproto_flow()
    proc = subprocess.run(["ovs-ofctl", "parse-flow", f"{flow},actions=drop"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


PLACEMENTS = [{"ip": "198.18.0.100", "owner": "default/web-0", "mac": P1, "port": 2},
              {"ip": "fd00:18::100", "owner": "default/web-0", "mac": P1, "port": 2},
              {"ip": "198.18.0.101", "owner": "other/web-0", "mac": N1, "port": 2},
              {"ip": "198.18.0.102", "owner": "default/db-0", "mac": N1, "port": 3}]


def test_a_subject_is_found_by_address_or_name() -> None:
    assert find_subject("198.18.0.100", PLACEMENTS)["owner"] == "default/web-0"
    assert find_subject("fd00:0018:0::100", PLACEMENTS)["ip"] == "fd00:18::100"
    assert find_subject("default/web-0", PLACEMENTS)["ip"] == "198.18.0.100"  # dual stack: IPv4 first
    assert find_subject("db-0", PLACEMENTS)["ip"] == "198.18.0.102"


@pytest.mark.parametrize(("query", "says"), [
    ("198.18.0.7", "198.18.0.7: no placement has that address; `underlayctl pods` lists"),
    ("web-0", "web-0: 2 placements have that name (default/web-0, other/web-0): give namespace/name or the IP"),
    ("default/nope", "default/nope: no placement has that name"),
])
def test_an_unknown_or_ambiguous_subject_is_named_with_what_to_do(query: str, says: str) -> None:
    with pytest.raises(LookupError) as err:
        find_subject(query, PLACEMENTS)
    assert str(err.value).startswith(says)


def test_a_flow_from_the_controllers_rest_reads_as_the_flow_itself() -> None:
    """Desired flows come from the pipeline, actual ones from the operator REST: both compare."""
    from controller.opsapi import flow_json

    flows = desired_flows(two_node_state())
    assert {FlowView.from_json(json.loads(json.dumps(flow_json(f, {})))) for f in flows} == {
        FlowView.from_flow(f) for f in flows}


def test_trusted_ports_are_read_from_the_flows() -> None:
    assert trusted_ports(views()) == (PORT_ROUTER,)
