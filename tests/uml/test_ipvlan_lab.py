"""ipvlan end to end: `underlay-lab up --mode ipvlan` inside User-Mode Linux, then what must hold.

The lab is the whole system on one kernel: a private Open vSwitch (fail_mode=secure) whose only
flows are the real controller's (`underlay-controller`, beside it in the rig's management namespace),
two nodes each with a real `underlay-agent`, pods made through the installed CNI plugin binary chained
with the reference `tuning`, and an external host on a trusted port. It is built once for the module
(UML is slow to start processes) and the tests look at it from different sides. On this host, which
has no ipvlan, the same command makes each node a UML instance instead: tests/deploy/test_lab_uml_nodes.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab import netns
from deploy.lab.lab import Lab, LabState

pytestmark = pytest.mark.rig
LAB_CLI = Path(sys.executable).parent / "underlay-lab"


def underlay_lab(state_dir: Path, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAB_CLI), "--state-dir", str(state_dir), *argv], capture_output=True, text=True,
                          timeout=timeout)


def ping(ns: str, address: str) -> bool:
    return netns.run(ns, ["ping", "-n", "-c", "1", "-W", "2", address], check=False).returncode == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    state_dir = tmp_path_factory.mktemp("lab")
    up = underlay_lab(state_dir, "up", "--mode", "ipvlan")
    try:
        assert up.returncode == 0, f"underlay-lab up --mode ipvlan failed:\n{up.stderr}"
        yield Lab(state_dir, progress=lambda _: None)
    finally:
        down = underlay_lab(state_dir, "down")
        assert down.returncode == 0, down.stderr
        assert not netns.list_names(Lab(state_dir).prefix), "underlay-lab down left namespaces behind"


@pytest.fixture(scope="module")
def state(lab: Lab) -> LabState:
    return lab.state


@pytest.mark.uml
def test_lab_demo_reaches_every_ipvlan_pod_at_its_node_mac(lab: Lab, state: LabState) -> None:
    demo = underlay_lab(lab.state_dir, "demo", timeout=120)

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "4 of 4 ARP requests answered by the switch's responder flows" in demo.stdout
    assert "TCP, every byte checked: from the external host to all 4 pods" in demo.stdout
    assert {pod.mac for pod in state.pods.values()} == {node.mac for node in state.nodes.values()}
    assert all(pod.mac == state.nodes[pod.node].mac for pod in state.pods.values()), "ipvlan: the node's MAC"


@pytest.mark.uml
def test_external_arp_for_a_pod_is_answered_by_the_switch_with_the_node_mac(lab: Lab, state: LabState) -> None:
    """Each row is one broadcast ARP from the external host: the responder flow's n_packets rose, the
    controller's packet-in counter did not, and the reply names the pod's node's uplink MAC."""
    rows = lab.demo()

    assert [(row["pod"], row["arp_reply_mac"]) for row in rows] == [
        (pod.name, state.nodes[pod.node].mac) for pod in state.pods.values()]
    assert all(row["responder_flow_hits"] >= 1 and row["controller_packet_ins"] == 0 for row in rows), rows
    assert all(row["ping"] for row in rows), rows


@pytest.mark.uml
def test_pods_on_two_nodes_reach_each_other(state: LabState) -> None:
    a, b = state.pods["node1-pod1"], state.pods["node2-pod1"]

    assert ping(a.netns, b.ip) and ping(b.netns, a.ip)
    assert ping(a.netns, state.pods["node1-pod2"].ip), "two ipvlan pods of one node"


@pytest.mark.uml
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_tcp_and_udp_between_ipvlan_pods_across_nodes_and_from_outside(lab: Lab, proto: str) -> None:
    """The whole lab in one UML kernel, veths and all: TCP and UDP, every byte checked."""
    for client, server in (("node1-pod1", "node2-pod1"), ("external", "node2-pod2"), ("node1-pod2", "external")):
        result = lab.exchange(client, server, proto=proto)
        assert result.ok, f"{client} -> {server}: {result}"


@pytest.mark.uml
def test_node_reaches_its_own_pods_through_the_ipvlan_shim(state: LabState) -> None:
    """An ipvlan parent cannot reach its children: the node's /32s go through its ipvlan shim."""
    node, pod = state.nodes["node1"], state.pods["node1-pod1"]
    shim = json.loads(netns.run(node.netns, ["ip", "-j", "-d", "link", "show", "ulshim0"]).stdout)[0]
    route = json.loads(netns.run(node.netns, ["ip", "-j", "route", "get", pod.ip]).stdout)[0]

    assert (shim["linkinfo"]["info_kind"], shim["address"]) == ("ipvlan", node.mac)
    assert route["dev"] == "ulshim0"
    assert ping(node.netns, pod.ip), "kubelet's probes come from the node"
    assert ping(pod.netns, node.ip)


@pytest.mark.uml
def test_del_twice_and_after_the_netns_is_gone(lab: Lab) -> None:
    pod = lab.add_pod("extra", node="node1")
    node = lab.state.nodes["node1"]

    lab.run_cni("DEL", pod)
    lab.run_cni("DEL", pod)
    lab.delete_pod("extra")  # a third DEL, then the runtime removes the netns
    lab.run_cni("DEL", pod, state=lab.state)

    held = lab.controller().request("GET", "/v1/nodes/node1/pods", node="node1")["pods"]
    assert pod.container_id not in {p["container_id"] for p in held}
    assert pod.ip not in netns.run(node.netns, ["ip", "route", "show", "dev", "ulshim0"]).stdout
