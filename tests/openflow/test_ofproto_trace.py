"""Real `ofproto/trace` output from the lab (tests/openflow/ofproto_traces) → verdicts in words.

The samples: the external host on trusted port 1 (6e:bf:6e:0f:21:54, 198.18.0.2), pod 198.18.0.100
(02:55:c6:12:00:64) on node1's port 2; the `*_dropped`, `*_unanswered` and `*_flooded` ones after the
pod's flows were deleted by hand (`ovs-ofctl del-flows` with its matches), `ipv4_no_match` after the
l2 table's miss flow was deleted too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from openflow.ofproto_trace import Outcome, TraceError, judge, parse, parse_dpif_ports, verdict
from openflow.tracing import Kind, Packet, Source, Subject, pod_arp_reply, probes

SAMPLES = Path(__file__).parent / "ofproto_traces"
BRIDGE = "ul0f77-sw"
POD = Subject("198.18.0.100", "02:55:c6:12:00:64", 2, "default/node1-pod1")
EXTERNAL = Source(1, "6e:bf:6e:0f:21:54", "198.18.0.2")
ARP, THERE, BACK = probes(POD, EXTERNAL)
POD_ARP = pod_arp_reply(POD, EXTERNAL)


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def dp_ports() -> dict[int, int]:
    return parse_dpif_ports(sample("dpif_show"), BRIDGE)


def leg(name: str, packet: Packet):  # type: ignore[no-untyped-def]
    return judge(parse(sample(name)), packet, dp_ports=dp_ports())


def test_dpif_show_maps_datapath_ports_to_openflow_ports() -> None:
    assert dp_ports() == {1: 65534, 2: 1, 3: 2, 4: 3}
    assert parse_dpif_ports(sample("dpif_show"), "other-bridge") == {}


def test_a_trace_is_parsed_into_its_tables() -> None:
    trace = parse(sample("arp_answered"))
    assert [step.table for step in trace.steps] == [0, 1]
    ingress, responder = trace.steps
    assert (ingress.match, ingress.priority, ingress.cookie) == ("arp,in_port=1", 101, 0x55AA000000000000)
    assert ingress.actions[-1] == "goto_table:1" and ingress.notes[0].startswith(">> suppressing side effects")
    assert responder.match == "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.100,arp_op=1"
    assert responder.actions[-1] == "IN_PORT"
    assert trace.dp_outputs() == (2,)  # the sets before it hold commas inside parentheses
    assert trace.flow.startswith("arp,in_port=1,vlan_tci=0x0000,")


def test_a_flow_without_match_fields_and_a_table_without_any() -> None:
    steps = parse(sample("ipv4_no_match")).steps
    assert (steps[1].match, steps[1].priority) == ("", 0)
    assert steps[2].match is None and steps[2].drops


def test_the_switch_answering_arp_is_reported_with_the_mac() -> None:
    answered = leg("arp_answered", ARP)
    assert answered.outcome is Outcome.ANSWERED and answered.answered_mac == POD.mac
    assert answered.line() == ("ARP who-has 198.18.0.100 from 198.18.0.2 on port 1: answered by the switch with "
                               "02:55:c6:12:00:64, out port 1 (table 1 (responder) flow "
                               "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_tpa=198.18.0.100,arp_op=1)")


def test_forwarded_by_its_l2_flow() -> None:
    there = leg("ipv4_forwarded", THERE)
    assert there.outcome is Outcome.DELIVERED and there.ports == (2,)
    assert there.why == "reaches port 2 (table 2 (l2) flow dl_dst=02:55:c6:12:00:64)"


def test_the_reply_flooded_by_normal_still_arrives() -> None:
    back = leg("ipv4_reply", BACK)
    assert back.outcome is Outcome.DELIVERED and back.ports == (1, 3, 65534)
    assert back.why == "reaches port 1, flooded to ports 1, 3, LOCAL"  # the external host's MAC not learned


def test_without_its_flows_arp_is_flooded_and_the_pod_must_answer() -> None:
    request = leg("arp_unanswered", ARP)
    assert request.outcome is Outcome.DELIVERED
    assert "the responder has no flow for 198.18.0.100, so the switch does not answer and the pod must" in request.why


def test_without_its_l2_flow_normal_forwards_by_learning() -> None:
    there = leg("ipv4_flooded", THERE)
    assert there.outcome is Outcome.DELIVERED
    assert there.why == ("reaches port 2, forwarded by NORMAL (MAC learning): no l2 flow forwards "
                         "02:55:c6:12:00:64 to its port")


@pytest.mark.parametrize(("name", "packet"), [("ipv4_reply_dropped", BACK), ("arp_reply_dropped", POD_ARP)])
def test_without_port_security_flows_the_pods_answers_are_dropped_at_ingress(name: str, packet: Packet) -> None:
    dropped = leg(name, packet)
    assert dropped.outcome is Outcome.DROPPED and dropped.where() == "table 0 (ingress)"
    assert dropped.why == ("dropped at table 0 (ingress) by its miss flow (priority=0 actions=drop): no port-security "
                           "flow admits 198.18.0.100 (02:55:c6:12:00:64) from port 2")


def test_a_table_without_a_miss_flow() -> None:
    dropped = leg("ipv4_no_match", THERE)
    assert dropped.outcome is Outcome.DROPPED and dropped.where() == "table 2 (l2)"
    assert dropped.why == ("dropped at table 2 (l2) by no flow: table 2 has no flow that matches it, "
                           "and no miss flow")


def test_sent_elsewhere_is_not_delivered() -> None:
    wrong = judge(parse(sample("ipv4_forwarded")), Packet(Kind.IPV4, 1, EXTERNAL.mac, EXTERNAL.ip, POD.mac,
                                                          POD.ip, expect_port=3), dp_ports=dp_ports())
    assert wrong.outcome is Outcome.ELSEWHERE and wrong.why.startswith("leaves by 2, not port 3")


def test_verdict_reachable_and_the_first_failure() -> None:
    good = (leg("arp_answered", ARP), leg("ipv4_forwarded", THERE), leg("ipv4_reply", BACK))
    assert verdict(good, mac=POD.mac, from_port=1) == (
        True, "reachable from port 1: ARP answered by the switch, IPv4 there and back")
    broken = (leg("arp_unanswered", ARP), leg("arp_reply_dropped", POD_ARP), leg("ipv4_flooded", THERE),
              leg("ipv4_reply_dropped", BACK))
    ok, line = verdict(broken, mac=POD.mac, from_port=1)
    assert not ok and line.startswith("unreachable from port 1: ARP reply 198.18.0.100 -> 198.18.0.2 from port 2: "
                                      "dropped at table 0 (ingress)")


def test_an_answer_with_another_mac_is_unreachable() -> None:
    good = (leg("arp_answered", ARP), leg("ipv4_forwarded", THERE), leg("ipv4_reply", BACK))
    ok, line = verdict(good, mac="02:00:00:00:00:01", from_port=1)
    assert not ok and "answered with 02:55:c6:12:00:64, not 02:00:00:00:00:01 (table 1 (responder))" in line


@pytest.mark.parametrize("text", ["", "ovs-appctl: cannot connect to \"/nowhere\" (No such file or directory)",
                                  "Flow: ip\n\nbridge(\"x\")\n-------\n 0. what is this\n"])
def test_what_is_not_a_trace_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(TraceError):
        parse(text)


def test_the_deciding_flow_is_named_by_its_cookie() -> None:
    from openflow import cookies
    from openflow.cookies import Purpose

    cookie = cookies.make(0x55AA000000000000, Purpose.FORWARD, cookies.mac_owner(POD.mac))
    text = sample("ipv4_forwarded").replace("priority 100, cookie 0x55aa000000000000", f"priority 100, cookie {cookie:#x}")
    owners = cookies.owner_names([(cookies.mac_owner(POD.mac), "default/node1-pod1")])
    assert judge(parse(text), THERE, dp_ports=dp_ports(), owners=owners).why == (
        "reaches port 2 (table 2 (l2) flow dl_dst=02:55:c6:12:00:64: forward for default/node1-pod1)")
    assert judge(parse(text), THERE, dp_ports=dp_ports()).why.endswith(
        f": forward for owner {cookie & 0xFFFFFFFF:#010x})")  # not known: its id
