"""`underlay-lab up --topology leaf-spine` end to end (issue 15's Done when, in the lab): five bridges
in the lab's ovs-vswitchd joined by veth cables, the real controller with the fabric's config,
agents and pods through the CNI plugin on two leaves, the external host on the border leaf.

Pods on different leaves and the external host reach each other; ARP is answered on the
requester's own leaf with no packet-in; a spine lost under 10 ms pings costs at most 1 s of pings
and its return is used again; broadcasts on the redundant fabric reach each node once (no storm);
a controller SIGKILL and restart changes no flow on any switch."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.lab import fabric as labfabric
from deploy.lab import fabriclab, frames, netns, topology
from deploy.lab.lab import Lab, PodInfo
from deploy.lab.process import wait_until
from labcli import running_lab, status

pytestmark = pytest.mark.rig
INTERVAL = 0.01  # the pings' interval: 10 ms
MAX_LOST = round(1 / INTERVAL)  # at most 1 s of pings


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fabric")


@pytest.fixture(scope="module")
def lab(lab_dir):
    with running_lab(lab_dir, "--topology", "leaf-spine", "--nodes", "2", "--pods-per-node", "1") as run:
        yield run


@pytest.fixture
def the_lab(lab, lab_dir) -> Lab:
    return Lab(lab_dir, progress=lambda _: None)


def pod_on(the_lab: Lab, switch: str) -> PodInfo:
    state = the_lab.state
    return next(p for p in the_lab.pods(state).values() if state.switch_of[p.node] == switch)


def bridge(the_lab: Lab, switch: str) -> str:
    return topology.parse(the_lab.state.topology).bridge(switch, the_lab.prefix)


def test_up_builds_two_spines_three_leaves_cabled_and_connected(lab, the_lab):
    fabric = status(lab)["fabric"]

    assert [(s["name"], s["dpid"], s["hosts"]) for s in fabric["switches"]] == [
        ("spine1", "0x1", []), ("spine2", "0x2", []), ("leaf1", "0x11", ["node1"]), ("leaf2", "0x12", ["node2"]),
        ("leaf3", "0x13", ["external"])]
    assert len(fabric["links"]) == 6 and {link["state"] for link in fabric["links"]} == {"up"}
    connected = the_lab.controller().health()["connected"]
    assert len(connected) == 5, connected
    config = the_lab.controller().config_path.read_text()
    assert config.count("[[links]]") == 6 and 'a = "0x11:1"' in config and 'name = "spine1"' in config


def controller_says(the_lab: Lab) -> dict[tuple[str, str], str]:
    """Each link's state as the controller's GET /v1/topology has it ("up, used"), by the lab's ends."""
    links = fabriclab.status_json(the_lab, the_lab.state)["links"]
    return {(link["a"], link["b"]): link["controller"] and
            f"{link['controller']['state']}, {'used' if link['controller']['used'] else 'not used'}" for link in links}


def wait_all_links_used(the_lab: Lab) -> None:
    wait_until(lambda: set(controller_says(the_lab).values()) == {"up, used"}, timeout=15,
               what="the controller to confirm every link (LLDP) and use it")


def test_link_down_and_up_by_switch_names(lab, the_lab):
    """The cable's carrier goes on both ends, OVS and the controller see it; `status` shows both."""
    cable = topology.parse("leaf-spine").cable("leaf2", "spine2")
    veths = cable.veth_names(the_lab.prefix)
    wait_all_links_used(the_lab)

    assert lab("link", "down", "leaf2", "spine2").stdout.strip() == "link leaf2:2 - spine2:2: down"
    try:
        links = {(link["a"], link["b"]): link["state"] for link in status(lab)["fabric"]["links"]}
        assert links[("leaf2:2", "spine2:2")] == "down" and list(links.values()).count("down") == 1
        assert [the_lab.rig.ovs.vsctl("get", "interface", v, "link_state").strip() for v in veths] == ["down", "down"]
        wait_until(lambda: controller_says(the_lab)[("leaf2:2", "spine2:2")] == "down, not used", timeout=10,
                   what="the controller to take leaf2-spine2 down")
        assert "down, not used" in lab("status").stdout
    finally:
        lab("link", "up", "spine2", "leaf2")

    assert {link["state"] for link in status(lab)["fabric"]["links"]} == {"up"}
    wait_all_links_used(the_lab)
    wrong = lab("link", "down", "leaf1", "leaf2", check=False)
    assert wrong.returncode == 1 and "no link between leaf1 and leaf2: this lab's links are leaf1-spine1" in wrong.stderr


@pytest.mark.parametrize("client, server", [("leaf1", "leaf2"), ("leaf2", "leaf1"), ("external", "leaf1"),
                                            ("leaf2", "external")])
def test_pods_on_different_leaves_and_the_external_host_reach_each_other(the_lab, client, server):
    """TCP with every byte checked, across the spines."""
    def name(where: str) -> str:
        return "external" if where == "external" else pod_on(the_lab, where).name

    result = the_lab.exchange(name(client), name(server))

    assert result.ok, result


def test_arp_is_answered_on_the_requesters_own_leaf_with_no_packet_in(lab, the_lab):
    state = the_lab.state
    rows = fabriclab.demo_rows(the_lab, state)

    assert [(r["from_switch"], r["to_switch"]) for r in rows] == [("leaf1", "leaf2"), ("leaf2", "leaf1")]
    for row in rows:
        assert row["arp_reply_mac"] == row["mac"], row
        assert row["answered_on"] == {row["from_switch"]: 1}, row  # its own leaf's flow +1, no other switch's
        assert row["controller_packet_ins"] == 0 and row["switches_punted"] == 0, row
        assert row["ping"], row
    shown = lab("demo").stdout
    assert "2 ARP requests answered on the requester's own switch" in shown
    assert "all 2 pods reached from the external host; 2 of 2 ARP requests answered" in shown


def uplink_tx(the_lab: Lab, leaf: str) -> dict[str, int]:
    """Frames `leaf` sent up to each spine, by spine name."""
    fabric = topology.parse(the_lab.state.topology)
    counters = labfabric.port_counters(the_lab.rig.ovs, bridge(the_lab, leaf))
    return {(c.b if c.a.switch == leaf else c.a).switch: counters[(c.a if c.a.switch == leaf else c.b).port][1]
            for c in fabric.cables_of(leaf)}


def ping_flood(the_lab: Lab, source: PodInfo, target: PodInfo, *, seconds: float) -> subprocess.Popen[str]:
    argv = ["ping", "-n", "-q", "-i", str(INTERVAL), "-W", "1", "-w", str(seconds), target.ip]
    return subprocess.Popen(netns.exec_argv(source.netns, argv), stdout=subprocess.PIPE, text=True)


def lost(output: str) -> int:
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", output).groups())
    return sent - received


def the_spine_in_use(the_lab: Lab, leaf: str, before: dict[str, int], *, count: int) -> str:
    def moved() -> str | None:
        now = uplink_tx(the_lab, leaf)
        return next((spine for spine in now if now[spine] - before[spine] >= count), None)
    spine: str = wait_until(moved, timeout=10, what=f"{count} pings up from {leaf} to a spine")
    return spine


def test_a_spine_lost_under_10ms_pings_costs_at_most_1s_and_its_return_is_used_again(the_lab):
    """Pings every 10 ms from the pod on leaf1 to the pod on leaf2; the spine they cross loses both
    its leaf cables (a carrier loss the switches report); the controller moves the path to the
    other spine. Then the cables come back and the path returns to them (the fabric prefers the
    lowest dpid): the restored spine's counters rise again."""
    a, b = pod_on(the_lab, "leaf1"), pod_on(the_lab, "leaf2")
    fabric = topology.parse(the_lab.state.topology)
    wait_all_links_used(the_lab)
    assert netns.run(a.netns, ["ping", "-n", "-c", "1", "-W", "2", b.ip], check=False).returncode == 0
    before = uplink_tx(the_lab, "leaf1")
    ping = ping_flood(the_lab, a, b, seconds=8)
    spine = the_spine_in_use(the_lab, "leaf1", before, count=50)
    cut = [("leaf1", spine), ("leaf2", spine)]
    try:
        for one, other in cut:
            labfabric.set_link(the_lab.rig, fabric, one, other, prefix=the_lab.prefix, up=False)
        output, _ = ping.communicate(timeout=30)
    finally:
        for one, other in cut:
            labfabric.set_link(the_lab.rig, fabric, one, other, prefix=the_lab.prefix, up=True)

    assert lost(output) <= MAX_LOST, output
    wait_all_links_used(the_lab)
    returned = uplink_tx(the_lab, "leaf1")
    again = ping_flood(the_lab, a, b, seconds=10)
    try:
        assert the_spine_in_use(the_lab, "leaf1", returned, count=50) == spine
    finally:
        again.kill()
        again.communicate()


def test_broadcast_on_the_redundant_fabric_reaches_each_node_once(the_lab):
    """The external host broadcasts ARP requests for an address nobody has: each node sees each
    request exactly once (a loop would deliver copies without end), and no link port carries more
    than the requests and a few LLDP frames."""
    state, count, unknown = the_lab.state, 20, "198.18.0.250"
    fabric = topology.parse(state.topology)
    ext = state.external
    request = frames.arp_frame(frames.Arp(op=1, sha=ext["mac"], spa=ext["ip"], tha="00:00:00:00:00:00", tpa=unknown,
                                          eth_src=ext["mac"], eth_dst=frames.BROADCAST))
    links_before = link_tx(the_lab, fabric)
    seen: dict[str, list[bytes]] = {}
    listening = {name: threading.Event() for name in state.nodes}

    def capture(name: str) -> None:
        seen[name] = frames.capture(state.nodes[name].netns, "eth0", timeout=4, ready=listening[name].set)

    threads = [threading.Thread(target=capture, args=(name,)) for name in state.nodes]
    for thread in threads:
        thread.start()
    assert all(ready.wait(10) for ready in listening.values())
    for _ in range(count):
        frames.send(ext["netns"], "eth0", request)
    for thread in threads:
        thread.join()

    for node, captured in seen.items():
        copies = [f for f in captured if (arp := frames.parse_arp(f)) and arp.tpa == unknown and arp.spa == ext["ip"]]
        assert len(copies) == count, f"{node} saw {len(copies)} of {count} broadcasts"
    grown = {port: tx - links_before[port] for port, tx in link_tx(the_lab, fabric).items()}
    assert max(grown.values()) <= count + 10, grown  # 4 s of LLDP at ~1/s at most beside the requests


def link_tx(the_lab: Lab, fabric: topology.Fabric) -> dict[str, int]:
    """Frames sent on every link port of every switch, by "switch:port"."""
    sent = {}
    for switch in fabric.switches:
        counters = labfabric.port_counters(the_lab.rig.ovs, fabric.bridge(switch.name, the_lab.prefix))
        for cable in fabric.cables_of(switch.name):
            end = cable.a if cable.a.switch == switch.name else cable.b
            sent[str(end)] = counters[end.port][1]
    return sent


def flow_tables(the_lab: Lab) -> dict[str, list[str]]:
    fabric = topology.parse(the_lab.state.topology)
    return {s.name: sorted(the_lab.rig.ovs.ofctl("dump-flows", "--no-stats", fabric.bridge(s.name, the_lab.prefix))
                           .splitlines()) for s in fabric.switches}


def converged(controller: Any) -> list[dict[str, Any]] | None:
    switches = controller.request("GET", "/v1/switches", token=controller.operator_token)["switches"]
    ready = [s for s in switches if s["connected"] and s["last_convergence"] and s["in_sync"]]
    return switches if len(ready) == 5 else None


def test_controller_sigkill_and_restart_changes_no_flow_on_any_switch(the_lab):
    before = flow_tables(the_lab)
    assert all(before.values())

    the_lab.restart("controller", kill=True)
    controller = the_lab.controller()
    wait_until(lambda: converged(controller), timeout=30, what="all 5 switches converged after the restart")

    assert controller.health()["stats"]["flow_mods"] == 0, controller.health()["stats"]
    assert flow_tables(the_lab) == before
