"""The fabric's links on real switches: three bridges of the rig's Open vSwitch in a triangle, joined
by veth pairs, and the real controller. LLDP confirms each link; a veth set down takes its link
down (and the tree around it), set up brings it back; a cable to the wrong port is reported as
miscabled and not used; a controller SIGKILL and restart changes no flow on any switch."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import openflow

from deploy.lab import netns
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.rig import Rig

pytestmark = pytest.mark.rig

# link ports: 101.. on each bridge (the rig numbers host ports from 1, one counter for all bridges)
TRIANGLE = (("a", 101, "b", 101), ("b", 102, "c", 101), ("a", 102, "c", 102))


@dataclass
class Fabric:
    rig: Rig
    bridges: dict[str, str]  # name -> bridge
    dpids: dict[str, int]
    cables: dict[tuple[str, int], str]  # (switch, port) -> the veth end in that bridge
    controller: Controller

    def topology(self) -> dict[str, Any]:
        return self.controller.request("GET", "/v1/topology", token=self.controller.operator_token)

    def link(self, a: str, b: str) -> dict[str, Any]:
        """The link between switches `a` and `b` as GET /v1/topology shows it."""
        dpids = {f"{self.dpids[a]:#x}", f"{self.dpids[b]:#x}"}
        (found,) = [link for link in self.topology()["links"]
                    if {link["a"].split(":")[0], link["b"].split(":")[0]} == dpids]
        return found

    def set_cable(self, switch: str, port: int, state: str) -> None:
        netns.run(self.rig.mgmt_ns, ["ip", "link", "set", self.cables[switch, port], state])

    def flows(self, switch: str) -> str:
        return self.rig.ovs.ofctl("dump-flows", self.bridges[switch])


def wait_for(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {value!r})")
        time.sleep(0.02)


def cable(rig: Rig, a: str, b: str) -> tuple[str, str]:
    """A veth pair in the rig's management namespace, both ends up; named uniquely."""
    cable.count += 1  # type: ignore[attr-defined]
    ends = (f"{rig.prefix}k{cable.count}a", f"{rig.prefix}k{cable.count}b")  # type: ignore[attr-defined]
    netns.add_veth(ns_a=rig.mgmt_ns, name_a=ends[0], ns_b=rig.mgmt_ns, name_b=ends[1])
    for end in ends:
        netns.tx_checksum_off(rig.mgmt_ns, end)
    return ends


cable.count = 0  # type: ignore[attr-defined]


def build(rig: Rig, workdir_name: str, *, wiring: tuple[tuple[str, int, str, int], ...] = TRIANGLE,
          configured: tuple[tuple[str, int, str, int], ...] = TRIANGLE) -> Iterator[Fabric]:
    bridges = {name: rig.add_bridge() for name in "abc"}
    dpids = {name: int(rig.ovs.vsctl("get", "bridge", br, "other-config:datapath-id").strip().strip('"'), 16)
             for name, br in bridges.items()}
    cables: dict[tuple[str, int], str] = {}
    controller = Controller(workdir=rig.workdir / workdir_name, ns=rig.mgmt_ns, nodes={"n1": NodeSpec("n1")},
                            trusted={dpid: () for dpid in dpids.values()}, pool=PoolSpec("198.18.0.0/24"))
    try:
        for a, port_a, b, port_b in wiring:
            end_a, end_b = cable(rig, a, b)
            rig.ovs.add_port(bridges[a], end_a, port_a)
            rig.ovs.add_port(bridges[b], end_b, port_b)
            cables[a, port_a], cables[b, port_b] = end_a, end_b
        controller.write_config()
        text = controller.config_path.read_text()
        for name, dpid in dpids.items():
            text = text.replace(f'[switches."{dpid}"]\n', f'[switches."{dpid}"]\nname = "{name}"\n')
        text += "".join(f'[[links]]\na = "{dpids[a]}:{pa}"\nb = "{dpids[b]}:{pb}"\n' for a, pa, b, pb in configured)
        controller.config_path.write_text(text)
        controller.start()
        for br in bridges.values():
            rig.ovs.vsctl("set-controller", br, f"tcp:127.0.0.1:{controller.openflow_port}")
        controller.wait_healthy(timeout=20, switches=3)
        yield Fabric(rig, bridges, dpids, cables, controller)
    finally:
        controller.stop()
        for br in bridges.values():
            rig.ovs.vsctl("--if-exists", "del-br", br)
        for end in cables.values():
            netns.run(rig.mgmt_ns, ["ip", "link", "del", end], check=False)


@pytest.fixture
def triangle(rig: Rig) -> Iterator[Fabric]:
    yield from build(rig, "ctl-triangle")


def all_up(fabric: Fabric) -> bool:
    return all(link["state"] == "up" for link in fabric.topology()["links"])


def test_lldp_confirms_every_link_and_the_tree_spans_from_the_lowest_dpid(triangle: Fabric) -> None:
    wait_for(lambda: all_up(triangle), timeout=10, what="all three links confirmed by LLDP")
    body = triangle.topology()
    a, b, c = (f"{triangle.dpids[n]:#x}" for n in "abc")
    assert [(s["name"], s["connected"]) for s in body["switches"]] == [("a", True), ("b", True), ("c", True)]
    assert body["tree"] == [{"a": f"{a}:101", "b": f"{b}:101"}, {"a": f"{a}:102", "b": f"{c}:102"}]
    assert triangle.link("b", "c")["in_tree"] is False and triangle.link("b", "c")["used"] is True
    for switch in "abc":  # the punt flows, one per link port, and they are what brought LLDP back
        punts = [line for line in triangle.flows(switch).splitlines() if "dl_type=0x88cc" in line]
        assert len(punts) == 2 and all("CONTROLLER" in line for line in punts)
        assert all(int(re.search(r"n_packets=(\d+)", line).group(1)) > 0 for line in punts), \
            (punts, triangle.controller.logfile.read_text()[-3000:])  # type: ignore[union-attr]


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


@pytest.mark.xfail(hasattr(openflow, "COOKIE_MASK"), strict=True,
                   reason="reads by exact cookie miss the fabric's flows (cookies.make): zero churn needs the "
                          "`cookies` branch (reads by tag, openflow.COOKIE_MASK gone)")
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
