"""Pods on the segment, end to end: plugin binary → agent process → kernel, on the rig.

The controller is `ControllerDouble` (no switch programming), so the bridge runs NORMAL here.
"""

from __future__ import annotations

import time

import pytest
from pyroute2 import IPRoute

from deploy.lab import netns as lab_netns
from underlay_testbed import links_in, ns_of

pytestmark = pytest.mark.rig
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


def pod_ping(pod: str, address: str) -> bool:
    return lab_netns.run(ns_of(pod), ["ping", "-n", "-c", "2", "-W", "2", address], check=False).returncode == 0


def add(node, pod: str, cid: str, **conf: object) -> dict:
    call = node.cni("ADD", node.conf(**conf), container_id=cid, netns=pod, args=K8S.format(cid))
    assert call.returncode == 0, call.stdout
    return call.json


def host_routes(node) -> set[str]:
    """The node's /32 routes through the host shim: one per local macvlan pod."""
    with IPRoute(netns=node.host.netns, flags=0) as ipr:
        shim = ipr.link_lookup(ifname="ulshim0")
        routes = ipr.get_routes(family=2, table=254, oif=shim[0]) if shim else []
        return {r.get_attr("RTA_DST") for r in routes if r["dst_len"] == 32}


def test_pods_on_two_nodes_reach_each_other_the_outside_and_their_node(rig, bridge, make_node, make_host, pods):
    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")
    n1, n2 = make_node("n1"), make_node("n2")
    outside = make_host("ext", cidr="198.18.5.200/24")
    p1, p2 = pods.make("a"), pods.make("b")
    ip1 = add(n1, p1, "a")["ips"][0]["address"].split("/")[0]
    ip2 = add(n2, p2, "b")["ips"][0]["address"].split("/")[0]

    assert pod_ping(p1, ip2) and pod_ping(p2, ip1)
    assert outside.ping(ip1) and outside.ping(ip2)
    assert n1.host.ping(ip1), "a macvlan pod must be reachable from its own node (host shim)"
    assert n2.host.ping(ip2)
    assert pod_ping(p1, n1.host.ip)
    assert lab_netns.run(ns_of(p1), ["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"]).stdout.strip() == "1"


@pytest.mark.skip(reason="needs the real underlay-controller (ARP responder flows); ControllerDouble programs no switch")
def test_outside_host_gets_arp_reply_from_the_switch():
    """An outside host ARPs for a pod IP: the reply must come from the switch, the pod never sees it."""


def test_del_twice_and_after_the_netns_is_gone(make_node, pods, controller):
    node = make_node("n1")
    pod = pods.make("p")
    ip = add(node, pod, "c1")["ips"][0]["address"].split("/")[0]
    assert ip in host_routes(node)

    for _ in range(2):
        assert node.cni("DEL", node.conf(), container_id="c1", netns=pod).returncode == 0
    assert "eth0" not in links_in(ns_of(pod))
    assert ip not in host_routes(node)
    assert controller.allocations("n1") == {}

    add(node, pod, "c2")
    lab_netns.remove(ns_of(pod))
    gone = node.cni("DEL", node.conf(), container_id="c2", netns=pod)
    assert gone.returncode == 0, gone.stdout
    assert controller.allocations("n1") == {}
    assert node.cni("DEL", node.conf(), container_id="never-added", netns="").returncode == 0


@pytest.mark.parametrize("failure", ["controller refuses", "switch unavailable", "kernel refuses the MAC"])
def test_add_failing_half_way_leaves_nothing(failure, make_node, pods, controller):
    node = make_node("n1")
    pod = pods.make("p")
    conf = node.conf()
    if failure == "controller refuses":
        controller.refuse.append((409, {"error": "198.18.5.101 is held by default/db-1"}))
        expected = (101, "pod default/c1: controller: 198.18.5.101 is held by default/db-1")
    elif failure == "switch unavailable":
        controller.refuse.append((503, {"error": "switch 0x1 did not acknowledge in time"}))
        expected = (11, "pod default/c1: controller: switch 0x1 did not acknowledge in time")
    else:  # allocated first, then the kernel rejects a multicast MAC: the allocation must be released
        conf["runtimeConfig"] = {"mac": "01:00:5e:00:00:01"}
        expected = (100, "pod default/c1: failed to create macvlan on eth0: Cannot assign requested address")

    call = node.cni("ADD", conf, container_id="c1", netns=pod, args=K8S.format("c1"))

    assert (call.returncode, call.json["code"], call.json["msg"]) == (1, *expected)
    assert links_in(ns_of(pod)) == ["lo"]
    assert controller.allocations("n1") == {}
    assert host_routes(node) == set()
    assert not list((node.socket.parent / "n1-state").glob("*.json"))


def test_requested_ip_and_mac_through_runtime_config(make_node, pods):
    node = make_node("n1")
    pod = pods.make("p")
    result = add(node, pod, "c1", runtimeConfig={"ips": ["198.18.5.150/24"], "mac": "0a:00:00:00:01:50"})

    assert result["ips"][0]["address"] == "198.18.5.150/24"
    assert result["interfaces"][0]["mac"] == "0a:00:00:00:01:50"


def test_agent_restart_rebuilds_its_view_from_the_kernel(make_node, pods, controller, rig, tmp_path):
    node = make_node("n1")
    kept, lost = pods.make("kept"), pods.make("lost")
    ip_kept = add(node, kept, "kept")["ips"][0]["address"].split("/")[0]
    ip_lost = add(node, lost, "lost")["ips"][0]["address"].split("/")[0]
    node.process.terminate()
    node.process.wait(10)
    lab_netns.remove(ns_of(lost))

    from underlay_testbed import start_agent

    again = start_agent(rig, "n1", node.process.args, node.socket, tmp_path, node.host, node.bin_dir)
    try:
        assert host_routes(again) == {ip_kept}, "the route to the pod whose netns is gone must be removed"
        deadline = time.monotonic() + 5
        while set(controller.allocations("n1")) != {("kept", "eth0")} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(controller.allocations("n1")) == {("kept", "eth0")}, "the sync releases the lost pod"
        assert ip_lost not in {p["ip"] for p in controller.allocations("n1").values()}
        assert again.cni("DEL", again.conf(), container_id="kept", netns=kept).returncode == 0
    finally:
        again.process.terminate()
        again.process.wait(10)


def test_controller_restart_triggers_reregistration_and_resync(make_node, pods, controller):
    node = make_node("n1", resync_interval="0.2")
    pod = pods.make("p")
    ip = add(node, pod, "c1")["ips"][0]["address"].split("/")[0]

    controller.restart()
    with controller._lock:  # a controller that lost its store: the agent must re-add what it has
        controller.pods.clear()

    deadline = time.monotonic() + 10
    while ("c1", "eth0") not in controller.allocations("n1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "n1" in controller.nodes
    assert controller.allocations("n1")[("c1", "eth0")]["ip"] == ip
