"""`underlay-lab` end to end, through its command line as a user runs it: up, status, exec, demo,
pod add/del, restarts, down. Everything real: OVS, controller, agents, the CNI plugin, macvlan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.lab import netns, transfer
from deploy.lab.lab import Lab
from labcli import running_lab, run_at_once, status

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def lab(lab_dir):
    with running_lab(lab_dir, "--nodes", "2", "--pods-per-node", "2") as run:
        yield run


def test_up_makes_two_nodes_with_two_pods_each(lab):
    state = status(lab)
    assert [n["name"] for n in state["nodes"]] == ["node1", "node2"]
    assert sorted(p["node"] for p in state["pods"]) == ["node1", "node1", "node2", "node2"]
    assert len({p["ip"] for p in state["pods"]}) == 4
    for node in state["nodes"]:
        assert json.loads(open(node["cni_conf"]).read())["plugins"][0]["type"] == "underlay"
    assert all(netns.exists(p["netns"]) for p in state["pods"])


def test_demo_reaches_every_pod_and_the_switch_answers_arp(lab):
    proc = lab("demo")
    assert "all 4 pods reached" in proc.stdout
    assert "4 of 4 ARP requests answered by the switch" in proc.stdout
    assert ("TCP, every byte checked: from the external host to all 4 pods, and 2 transfers between pods "
            "on different nodes") in proc.stdout


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("client, server", [("node1-pod1", "node2-pod1"), ("node2-pod2", "node1-pod2"),
                                            ("external", "node2-pod1"), ("node1-pod1", "external")])
def test_tcp_and_udp_cross_the_switch(lab, lab_dir, client, server, proto):
    """Pod to pod across nodes, the external host to a pod and back: a few MB of TCP (or 64 UDP
    echoes), every byte compared, through the userspace datapath and the controller's flows."""
    result = Lab(lab_dir, progress=lambda _: None).exchange(client, server, proto=proto)

    assert result.ok, result
    assert result.size == (transfer.SIZE if proto == "tcp" else transfer.DATAGRAMS)


def test_the_lab_fixes_its_cables_not_the_pods(lab, lab_dir):
    """Checksum offload is off on the veth ends the lab makes (nodes' uplinks, the external host),
    which the userspace datapath reads; the agent's pod links keep theirs, as on a real NIC, since
    what they send is checksummed in software on its way out through the node's uplink."""
    state = Lab(lab_dir).state

    assert [netns.tx_checksumming(node.netns, "eth0") for node in state.nodes.values()] == [False, False]
    assert not netns.tx_checksumming(state.external["netns"], "eth0")
    assert all(netns.tx_checksumming(pod.netns, "eth0") for pod in state.pods.values())


def test_exec_passes_exit_status_and_reaches_the_switch(lab):
    state = status(lab)
    pods = state["pods"]
    assert lab("exec", pods[0]["name"], "--", "ping", "-c", "1", "-W", "2", pods[-1]["ip"]).returncode == 0
    assert lab("exec", "external", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    flows = lab("exec", "switch", "--", "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", state["switch"]["bridge"]).stdout
    assert pods[0]["ip"] in flows


def test_node_reaches_its_own_pod(lab):
    state = status(lab)
    pod = next(p for p in state["pods"] if p["node"] == "node1")
    assert lab("exec", "node1", "--", "ping", "-c", "1", "-W", "2", pod["ip"]).returncode == 0


def test_pod_add_with_fixed_ip_then_del(lab):
    lab("pod", "add", "fixed", "--node", "node2", "--ip", "198.18.0.150")
    assert lab("exec", "external", "--", "ping", "-c", "1", "-W", "2", "198.18.0.150").returncode == 0

    lab("pod", "del", "fixed")

    assert "fixed" not in [p["name"] for p in status(lab)["pods"]]
    assert lab("exec", "external", "--", "ping", "-c", "1", "-W", "1", "198.18.0.150", check=False).returncode != 0
    bad = lab("pod", "add", "x", "--node", "node9", check=False)
    assert bad.returncode == 1 and "no node 'node9'" in bad.stderr


def test_twenty_concurrent_pod_adds_then_dels_lose_nothing(lab, lab_dir):
    """20 `underlay-lab pod add` at once, as a user's shell loop with `&` runs them: every pod is in
    lab.json afterwards (none lost to a concurrent write), then 20 concurrent `pod del` remove each."""
    names = [f"k{index}" for index in range(1, 21)]
    before = {p["name"] for p in status(lab)["pods"]}

    added = run_at_once(lab_dir, [("pod", "add", name, "--node", f"node{1 + index % 2}")
                                  for index, name in enumerate(names)])

    assert [p.returncode for p in added] == [0] * 20, [p.stderr for p in added if p.returncode]
    pods = {p["name"]: p for p in status(lab)["pods"]}
    assert set(pods) == before | set(names), f"lost from lab.json: {sorted(set(names) - set(pods))}"
    assert len({pods[name]["ip"] for name in names}) == 20
    assert {line.split()[2] for p in added for line in p.stdout.splitlines()} == {pods[n]["ip"] for n in names}

    deleted = run_at_once(lab_dir, [("pod", "del", name) for name in names])

    assert [p.returncode for p in deleted] == [0] * 20, [p.stderr for p in deleted if p.returncode]
    assert {p["name"] for p in status(lab)["pods"]} == before
    assert not any(netns.exists(pods[name]["netns"]) for name in names)


def test_data_plane_survives_controller_kill_and_agent_restart(lab):
    lab("restart", "controller", "--kill")
    lab("restart", "agent", "node1")
    assert "all 4 pods reached" in lab("demo").stdout


def test_down_leaves_nothing_and_is_safe_twice(tmp_path):
    state_dir = tmp_path / "lab"
    cli = [sys.executable, "-m", "deploy.lab.cli", "--state-dir", str(state_dir)]
    subprocess.run(cli + ["up", "--nodes", "1", "--pods-per-node", "1"], check=True, capture_output=True, timeout=180)
    prefix = json.loads(subprocess.run(cli + ["status", "--json"], check=True, capture_output=True,
                                       text=True).stdout)["switch"]["netns"].split("-")[0]

    for _ in range(2):
        assert subprocess.run(cli + ["down"], capture_output=True, timeout=60).returncode == 0

    assert netns.list_names(f"{prefix}-") == []
    assert not (state_dir / prefix).exists()
    missing = subprocess.run(cli + ["status"], capture_output=True, text=True)
    assert missing.returncode == 1 and "no lab is running" in missing.stderr


def test_up_names_the_problem_when_the_openflow_port_is_taken(tmp_path):
    """A lab whose controller cannot listen fails with the reason, and leaves nothing behind."""
    import socket

    from deploy.lab.control import ControllerDied
    from deploy.lab.lab import Lab

    lab = Lab(tmp_path / "busy", progress=lambda _: None)
    holder: list[socket.socket] = []
    real_start = lab.rig.start

    def start_then_take_the_port(**kwargs):
        started = real_start(**kwargs)
        with netns.entered(lab.rig.mgmt_ns):
            sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 6653))
        sock.listen()
        holder.append(sock)
        return started

    lab.rig.start = start_then_take_the_port
    try:
        with pytest.raises(ControllerDied, match=r"cannot listen on 127.0.0.1:6653 \(OpenFlow\)"):
            lab.up(nodes=1, pods_per_node=0)
    finally:
        for sock in holder:
            sock.close()
    assert netns.list_names(f"{lab.prefix}-") == []
