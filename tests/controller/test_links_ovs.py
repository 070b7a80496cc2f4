"""The fabric's links on real switches: three bridges of the rig's Open vSwitch in a triangle, joined
by veth pairs, and the real controller. LLDP confirms each link; a veth set down takes its link
down (and the tree around it), set up brings it back; a cable to the wrong port is reported as
miscabled and not used; a port deleted, LLDP frames that stop, a switch disconnected take links
down; hosts on two switches reach each other before, during and after a cut; a controller SIGKILL
and restart changes no flow on any switch."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fabricrig import Fabric, all_up, build, packets, wait_for

from deploy.lab.rig import Rig

pytestmark = pytest.mark.rig

@pytest.fixture
def triangle(rig: Rig) -> Iterator[Fabric]:
    yield from build(rig, "ctl-triangle")


def test_lldp_confirms_every_link_and_the_tree_spans_from_the_lowest_dpid(triangle: Fabric) -> None:
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    body = triangle.topology()
    a, b, c = (f"{triangle.dpids[n]:#x}" for n in "abc")
    assert [(s["name"], s["connected"]) for s in body["switches"]] == [("a", True), ("b", True), ("c", True)]
    assert body["tree"] == [{"a": f"{a}:101", "b": f"{b}:101"}, {"a": f"{a}:102", "b": f"{c}:102"}]
    assert triangle.link("b", "c")["in_tree"] is False and triangle.link("b", "c")["used"] is True
    for switch in "abc":  # the punt flows, one per link port, and they are what brought LLDP back
        lldp = [line for line in triangle.flows(switch).splitlines() if "dl_type=0x88cc" in line]
        punts = [line for line in lldp if "CONTROLLER" in line]
        assert len(punts) == 2 and len(lldp) == 3  # and LLDP from any other port dropped
        assert all(packets(line) > 0 for line in punts), punts


def test_a_cable_down_takes_its_link_down_and_back_up_is_used_again(triangle: Fabric) -> None:
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    bundles = triangle.controller.health()["stats"]["bundles"]

    triangle.set_cable("a", 101, "down")  # a-b cut: the tree must reach b through c
    link = wait_for(lambda: (lk := triangle.link("a", "b"))["state"] == "down" and lk, timeout=2,
                    what="a-b down after its veth went down")
    assert link["used"] is False and link["in_tree"] is False
    assert wait_for(lambda: triangle.link("b", "c")["in_tree"], timeout=2, what="b-c in the tree")
    # every switch reconverged to the new tree: a's floods no longer go out of port 101
    wait_for(lambda: triangle.controller.health()["stats"]["bundles"] > bundles, timeout=5, what="a bundle sent")
    assert wait_for(lambda: "output:101" not in triangle.flows("a"), timeout=5, what="a's flood flows off port 101")

    triangle.set_cable("a", 101, "up")
    wait_for(lambda: triangle.link("a", "b")["state"] == "up", timeout=5, what="a-b up again after LLDP")
    assert triangle.link("a", "b")["in_tree"] is True and triangle.link("b", "c")["in_tree"] is False
    assert wait_for(lambda: "output:101" in triangle.flows("a"), timeout=5, what="a floods out of 101 again")


def test_hosts_on_two_switches_reach_each_other_along_the_tree_before_during_and_after_a_cut(rig: Rig) -> None:
    """Hosts on trusted ports of b and c: their frames are flooded along the tree (b-a-c). With a-b
    cut the tree is a-c-b and they still reach each other; with a-b back, as before."""
    for fabric in build(rig, "ctl-pings", hosts=("b", "c")):
        hb, hc = fabric.hosts["b"], fabric.hosts["c"]
        wait_for(lambda: all_up(fabric), timeout=10, what="all three links confirmed by LLDP")
        assert hb.ping(hc.ip or "", count=2)
        fabric.set_cable("a", 101, "down")
        wait_for(lambda: fabric.link("b", "c")["in_tree"], timeout=2, what="b-c in the tree")
        wait_for(lambda: hb.ping(hc.ip or "", timeout=0.5), timeout=5, what="b reaches c through the new tree")
        fabric.set_cable("a", 101, "up")
        wait_for(lambda: fabric.link("a", "b")["in_tree"], timeout=5, what="a-b back in the tree")
        assert not fabric.link("b", "c")["in_tree"]
        wait_for(lambda: hb.ping(hc.ip or "", timeout=0.5), timeout=5, what="b reaches c through a again")


def test_a_switch_lost_takes_its_links_down_and_returns(triangle: Fabric) -> None:
    """b's OpenFlow connection goes (as after echo timeouts): its links go down, a and c converge to
    the tree without it; b back, its links return once LLDP confirms them."""
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    triangle.rig.ovs.vsctl("del-controller", triangle.bridges["b"])
    wait_for(lambda: triangle.link("a", "b")["state"] == "down" and triangle.link("b", "c")["state"] == "down",
             timeout=5, what="b's links down")
    assert triangle.link("a", "b")["reason"] == f"switch {triangle.dpids['b']:#x} is not connected"
    assert [link["state"] for link in triangle.topology()["links"]].count("up") == 1
    wait_for(lambda: "output:101" not in triangle.flows("a"), timeout=5, what="a no longer floods towards b")
    triangle.rig.ovs.vsctl("set-controller", triangle.bridges["b"], f"tcp:127.0.0.1:{triangle.controller.openflow_port}")
    wait_for(lambda: all_up(triangle), timeout=15, what="b's links up again")


def test_a_link_port_deleted_takes_its_link_down_and_added_back_returns(triangle: Fabric) -> None:
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    triangle.rig.ovs.vsctl("del-port", triangle.bridges["c"], triangle.cables["c", 101])
    link = wait_for(lambda: (lk := triangle.link("b", "c"))["state"] == "down" and lk, timeout=2,
                    what="b-c down after c's port was deleted")
    assert link["reason"] == f"port {triangle.dpids['c']:#x}:101 is down"
    triangle.rig.ovs.add_port(triangle.bridges["c"], triangle.cables["c", 101], 101)
    wait_for(lambda: triangle.link("b", "c")["state"] == "up", timeout=5, what="b-c up again")


def test_a_link_whose_lldp_frames_stop_goes_down_and_returns_when_they_come_back(triangle: Fabric) -> None:
    """Carrier stays up, but b stops hearing a (a flow of someone else's drops them: the controller
    leaves flows without its tag alone): the link goes down once 3 intervals pass in silence."""
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    a, b = (f"{triangle.dpids[n]:#x}" for n in "ab")
    triangle.rig.ovs.ofctl("add-flow", triangle.bridges["b"], "cookie=0x1,priority=2000,in_port=101,dl_type=0x88cc,"
                                                             "actions=drop")
    link = wait_for(lambda: (lk := triangle.link("a", "b"))["state"] == "down" and lk, timeout=10,
                    what="a-b down after its LLDP frames stopped")
    assert link["reason"] == f"{b}:101 heard no LLDP from {a}:101 for 3s" and link["used"] is False
    assert triangle.link("b", "c")["in_tree"] is True

    triangle.rig.ovs.ofctl("del-flows", triangle.bridges["b"], "cookie=0x1/-1")
    wait_for(lambda: triangle.link("a", "b")["state"] == "up", timeout=5, what="a-b up again")


def test_a_miscabled_link_is_reported_and_not_used(rig: Rig) -> None:
    # configured a:101-b:101 and a:102-c:102, but a's two cables are swapped
    wiring = (("a", 101, "c", 102), ("b", 102, "c", 101), ("a", 102, "b", 101))
    for fabric in build(rig, "ctl-miscabled", wiring=wiring):
        a, b, c = (f"{fabric.dpids[n]:#x}" for n in "abc")
        link = wait_for(lambda: (lk := fabric.link("a", "b"))["state"] == "miscabled" and len(lk["heard"]) == 2
                        and lk, timeout=10, what="a-b reported miscabled by both ends")
        assert link["used"] is False and link["heard"] == {f"{a}:101": f"{c}:102", f"{b}:101": f"{a}:102"}
        assert wait_for(lambda: fabric.link("a", "c")["state"] == "miscabled", timeout=10, what="a-c miscabled")
        assert wait_for(lambda: fabric.link("b", "c")["state"] == "up", timeout=10, what="b-c up")
        assert fabric.topology()["tree"] == [{"a": f"{b}:102", "b": f"{c}:101"}]  # a is cut off
        log = fabric.controller.logfile.read_text()
        assert re.search(rf"WARNING .*state=miscabled.*{a}:101 hears {c}:102, expected {b}:101", log), log[-2000:]


def test_controller_sigkill_and_restart_change_no_flow_on_any_switch(triangle: Fabric) -> None:
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    before = {switch: _flows_without_counters(triangle.flows(switch)) for switch in "abc"}
    triangle.controller.stop(kill=True)
    triangle.controller.start()
    triangle.controller.wait_healthy(timeout=20, switches=3)
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed again")
    assert triangle.controller.health()["stats"]["flow_mods"] == 0
    assert {switch: _flows_without_counters(triangle.flows(switch)) for switch in "abc"} == before


def _flows_without_counters(dump: str) -> list[str]:
    return sorted(re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*,\s*", "", line).strip()
                  for line in dump.splitlines() if "cookie=" in line)
