"""`underlay-lab up --mode ipvlan` on a kernel without ipvlan: every node is its own User-Mode Linux
kernel on a tap port of the lab's switch, as a bare-metal node is on its switch port. The controller
and the external host stay on this kernel; each node's agent reaches the controller over the segment.
The lab is dual stack (`--dual-stack`): IPv4 as ever, and every pod reached over IPv6 too, its
Neighbor Solicitations answered by the switch with its node's MAC.

Runs on this host (ipvlan runs inside the nodes' kernels), through the command line as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.lab import netns
from deploy.lab.lab import Lab, kernel_has_ipvlan

pytestmark = pytest.mark.rig
Run = Callable[..., subprocess.CompletedProcess[str]]


def live_processes_mentioning(text: str) -> list[str]:
    """Command lines of live (not zombie) processes that contain `text`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z")
        except (OSError, IndexError):
            continue
        if text in cmdline and not zombie:
            found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if kernel_has_ipvlan():
        pytest.skip("this kernel has ipvlan: the lab's ipvlan nodes are namespaces (tests/deploy/test_lab.py)")
    return tmp_path_factory.mktemp("umllab")


@pytest.fixture(scope="module")
def lab(state_dir: Path) -> Iterator[Run]:
    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "deploy.lab.cli", "--state-dir", str(state_dir), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"underlay-lab {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    try:
        run("up", "--nodes", "2", "--pods-per-node", "1", "--mode", "ipvlan", "--dual-stack")
        yield run
    finally:
        run("down", check=False)


def status(lab: Run) -> dict:
    return json.loads(lab("status", "--json").stdout)


def test_nodes_are_uml_kernels_and_pods_answer_at_their_node_mac(lab: Run) -> None:
    state = status(lab)
    nodes = {n["name"]: n for n in state["nodes"]}

    assert sorted(nodes) == ["node1", "node2"] and {n["kernel"] for n in nodes.values()} == {"uml"}
    assert all(p["mac"] == nodes[p["node"]]["mac"] for p in state["pods"]), "ipvlan: a pod has its node's MAC"
    inside = lab("exec", "node1", "--", "uname", "-r").stdout.strip()
    assert inside and inside != os.uname().release, "node1 runs its own kernel"
    assert lab("exec", "node1", "--", "sh", "-c", "exit 7", check=False).returncode == 7


def test_demo_from_the_external_host_arp_answered_by_the_switch(lab: Run) -> None:
    demo = lab("demo")

    assert "all 2 pods reached from the external host" in demo.stdout
    assert "2 of 2 ARP requests answered by the switch's responder flows" in demo.stdout
    assert ("TCP, every byte checked: from the external host to all 2 pods, and 2 transfers between pods "
            "on different nodes") in demo.stdout


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("client, server", [("node1-pod1", "node2-pod1"), ("external", "node1-pod1"),
                                            ("node2-pod1", "external")])
def test_tcp_and_udp_between_ipvlan_pods_on_node_kernels_and_the_outside(
        lab: Run, state_dir: Path, client: str, server: str, proto: str) -> None:
    """ipvlan pods inside two UML kernels, the external host on this one: a few MB of TCP (or 64 UDP
    echoes) each way, every byte checked. UML's eth0 does no checksum offload; the external host's
    veth has it off (the rig)."""
    result = Lab(state_dir, progress=lambda _: None).exchange(client, server, proto=proto)

    assert result.ok, result


def test_pods_on_two_node_kernels_reach_each_other_and_their_node(lab: Run) -> None:
    pods = {p["name"]: p for p in status(lab)["pods"]}

    ping = ("ping", "-n", "-c", "1", "-W", "2")
    assert lab("exec", "node1-pod1", "--", *ping, pods["node2-pod1"]["ip"]).returncode == 0
    assert lab("exec", "node1", "--", *ping, pods["node1-pod1"]["ip"]).returncode == 0


def test_ipv6_from_the_external_host_nd_answered_by_the_switch_with_the_node_mac(lab: Run, state_dir: Path) -> None:
    """Each row: the external host forgot the pod's IPv6 address and pinged it; its `ip -6 neigh`
    has the pod's node's MAC (ipvlan), from the responder flow (+1), the controller untouched."""
    state = status(lab)
    nodes = {n["name"]: n for n in state["nodes"]}

    rows = Lab(state_dir, progress=lambda _: None).demo()

    assert [(row["ip6"], row["nd_reply_mac"]) for row in rows] == [
        (p["ip6"], nodes[p["node"]]["mac"]) for p in state["pods"]]
    assert all(row["nd_flow_hits"] >= 1 and row["nd_packet_ins"] == 0 for row in rows), rows
    assert all(row["ping6"] and row["tcp6"].ok for row in rows), rows
    assert "2 of 2 Neighbor Solicitations answered by the switch's responder flows" in lab("demo").stdout


def test_ipv6_between_node_kernels_and_from_a_node_to_its_own_pod(lab: Run, state_dir: Path) -> None:
    pods = {p["name"]: p for p in status(lab)["pods"]}
    ping = ("ping", "-n", "-c", "1", "-W", "2")

    assert lab("exec", "node1-pod1", "--", *ping, pods["node2-pod1"]["ip6"]).returncode == 0
    assert lab("exec", "node1", "--", *ping, pods["node1-pod1"]["ip6"]).returncode == 0, "through the ipvlan shim"
    assert lab("exec", "node1-pod1", "--", *ping, "fd00:18::11").returncode == 0
    result = Lab(state_dir, progress=lambda _: None).exchange("node2-pod1", "node1-pod1", ipv6=True)
    assert result.ok, result


def test_pod_add_and_del_run_the_plugin_inside_the_node(lab: Run) -> None:
    lab("pod", "add", "web", "--node", "node2", "--ip", "198.18.0.150,fd00:18::150")
    assert lab("exec", "external", "--", "ping", "-n", "-c", "1", "-W", "2", "198.18.0.150").returncode == 0
    assert lab("exec", "external", "--", "ping", "-n", "-c", "1", "-W", "2", "fd00:18::150").returncode == 0

    lab("pod", "del", "web")

    assert "web" not in [p["name"] for p in status(lab)["pods"]]
    for address in ("198.18.0.150", "fd00:18::150"):
        gone = lab("exec", "external", "--", "ping", "-n", "-c", "1", "-W", "1", address, check=False)
        assert gone.returncode != 0


def test_agent_killed_inside_its_node_comes_back(lab: Run) -> None:
    lab("restart", "agent", "node1", "--kill")

    assert "all 2 pods reached" in lab("demo").stdout


def test_down_stops_every_instance_and_leaves_nothing(lab: Run, state_dir: Path) -> None:
    prefix = Lab(state_dir).prefix

    lab("down")
    lab("down")

    assert live_processes_mentioning(str(state_dir)) == []
    assert netns.list_names(f"{prefix}-") == []
    assert not (state_dir / prefix).exists()
