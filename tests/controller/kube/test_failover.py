"""Two controller replicas on the rig's real Open vSwitch and the session's real API server
(`store = "kubernetes"`, a Lease each election): the leader is master on the switch, the follower
slave and not ready; SIGKILL the leader under 10 ms pings and none is lost, the follower takes
over within the lease's period and sends no flow-mod. And a split brain, two replicas that both
believe they lead (each the holder of a Lease of its own), cannot both write: the switch refuses
the older generation id, whose flows never land, and that replica steps down."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import IPPOOLS, NODES, Kube
from controller.kube.lease import LEASES
from controller.kube.store import UPLINK_ANNOTATION
from deploy.lab import netns
from deploy.lab.control import ApiError, Controller, ControllerDied, NodeSpec, PoolSpec
from deploy.lab.process import wait_until
from deploy.lab.replicas import cable, leader, replicas, switch_roles, target, wait_master
from kubeenv import ensure_node
from test_controller_ovs import _dpid, _flow_table, place
from test_kube_ovs import api_in_mgmt  # noqa: F401  (a fixture)

pytestmark = pytest.mark.rig
FAST = {"lease_duration": 6, "renew_deadline": 4, "retry_period": 1}  # the defaults are the bench's


@pytest.fixture
def segment(rig: Any, bridge: str, make_host: Any, kube_clean: Kube, api_in_mgmt: None) -> Any:
    """Two nodes and an external host on the bridge; their Node objects and the pool in the API."""
    hosts = [make_host("n1", cidr="198.18.0.11/24"), make_host("n2", cidr="198.18.0.12/24")]
    ext = make_host("ext", cidr="198.18.0.2/24")
    for host in hosts:
        ensure_node(kube_clean, host.name)
    kube_clean.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "lab"},
                                       "spec": {"subnet": "198.18.0.0/24", "ips": ["198.18.0.100-198.18.0.250"], "default": True}})  # fmt: skip
    return hosts, ext


def two(rig: Any, bridge: str, segment: Any, k8s: Any, namespace: str, **lease: Any) -> list[Controller]:
    hosts, ext = segment
    return replicas(2, workdir=rig.workdir / bridge, ns=rig.mgmt_ns, nodes={h.name: NodeSpec(h.name) for h in hosts},
                    trusted={_dpid(rig, bridge): (ext.ofport,)}, pool=PoolSpec("198.19.255.0/24"),  # IPPools are used
                    kubeconfig=k8s.kubeconfig, lease_namespace=namespace, lease={**FAST, **lease})


@pytest.fixture
def stopped() -> Iterator[list[Controller]]:
    """Controllers to stop at the end, whatever happened."""
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.stop()


def register(controller: Controller, hosts: Any, kube: Kube) -> None:
    """The nodes register and speak; the leader learns their ports and writes them to their Node
    objects (what a new leader reads back), before the test goes on."""
    for host in hosts:
        controller.request("PUT", f"/v1/nodes/{host.name}", {"mac": host.mac, "ip": host.ip}, node=host.name)
        wait_until(lambda host=host: host.run("arping", "-c", "1", "-w", "1", "-I", "eth0", "198.18.0.2", check=False)
                   and controller.request("PUT", f"/v1/nodes/{host.name}", {"mac": host.mac, "ip": host.ip},
                                          node=host.name)["port"] == host.ofport, timeout=15, what=f"{host.name}'s port")
        wait_until(lambda host=host: UPLINK_ANNOTATION in (kube.get(NODES.path(name=host.name))["metadata"].get(
            "annotations") or {}), timeout=15, what=f"{host.name}'s uplink in its Node object")


def test_the_leader_killed_under_pings_loses_none_and_the_follower_takes_over_sending_no_flow_mod(
        rig: Any, bridge: str, segment: Any, k8s: Any, k8s_namespace: str, kube_clean: Kube,
        stopped: list[Controller]) -> None:
    hosts, ext = segment
    first, second = two(rig, bridge, segment, k8s, k8s_namespace)
    cable(rig.ovs, bridge, [first, second])
    for controller in (first, second):
        controller.start(timeout=60)
        stopped.append(controller)
        wait_until(lambda: leader([first, second]), timeout=30, what="a leader")
    assert leader([first, second]) is first and not second.ready()
    wait_until(lambda: switch_roles(rig.ovs, bridge) == {target(first): "master", target(second): "slave"},
               timeout=10, what=lambda: f"master and slave, not {switch_roles(rig.ovs, bridge)}")
    status, answer = second.raw_request("POST", "/v1/nodes/n1/pods", {}, token=first.nodes["n1"].token)
    assert status == 503 and answer["error"] == "not the leader: controller-0"

    register(first, hosts, kube_clean)
    pods = [place(first, host.name, f"web-{host.name}") for host in hosts]
    pod = rig.add_macvlan_pod("failover-pod", hosts[0], cidr=f"{pods[0]['ip']}/24", mac=pods[0]["mac"])
    assert ext.ping(pods[0]["ip"])
    flows_before = _flow_table(rig, bridge)

    ping = subprocess.Popen(netns.exec_argv(ext.netns, ["ping", "-n", "-q", "-i", "0.01", "-w", "15", pods[0]["ip"]]),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    first.stop(kill=True)
    wait_master(rig.ovs, bridge, second, timeout=FAST["lease_duration"] + 2 * FAST["retry_period"] + 5)
    assert second.ready()
    health = second.health()
    output, _ = ping.communicate(timeout=30)
    netns.remove(pod.netns)

    assert " 0% packet loss" in output, output
    assert health["stats"]["flow_mods"] == 0, health["stats"]
    assert _flow_table(rig, bridge) == flows_before
    assert kube_clean.get(LEASES.path(namespace=k8s_namespace, name="underlay-controller"))["spec"][
        "leaseTransitions"] == 1
    for host, placed in zip(hosts, pods):
        listed = second.request("GET", f"/v1/nodes/{host.name}/pods", node=host.name)["pods"]
        assert [(p["name"], p["ip"]) for p in listed] == [(f"web-{host.name}", placed["ip"])]

    first.start(timeout=60)  # back as the follower; a clean stop of the leader hands it the Lease
    wait_until(lambda: switch_roles(rig.ovs, bridge).get(target(first)) == "slave", timeout=30, what="first as slave")
    second.stop()
    assert "released identity=controller-1" in second.logfile.read_text()
    wait_until(first.ready, timeout=FAST["lease_duration"], what="first to lead again")


def test_a_split_brain_cannot_write_the_older_generation_is_refused_and_steps_down(
        rig: Any, bridge: str, segment: Any, k8s: Any, k8s_namespace: str, kube_clean: Kube,
        stopped: list[Controller]) -> None:
    """Each replica holds a Lease of its own, so both believe they lead: `old` with generation 0,
    `new` with 6 (its Lease had seen 5 transitions). `old` leads first and places a pod; then `new`
    takes the switch. `old`'s next pod is refused by the switch (it is slave now), its claim to
    be master again is refused as stale, and it steps down: that pod's flows never land. Started
    again, `old` claims master with its old generation, is refused at once and leaves, writing nothing."""
    hosts, _ = segment
    kube_clean.create(LEASES.path(namespace=k8s_namespace), {
        "metadata": {"name": "new"}, "spec": {"leaseDurationSeconds": 6, "leaseTransitions": 5}})  # free, 5 before
    old, new = two(rig, bridge, segment, k8s, k8s_namespace, lease_name="old")
    new.election = {**new.election, "lease_name": "new"}
    cable(rig.ovs, bridge, [old, new])
    old.start(timeout=60)
    stopped.append(old)
    wait_until(old.ready, timeout=30, what="the old replica to lead")
    register(old, hosts, kube_clean)
    first = place(old, "n1", "before")
    new.start(timeout=60)
    stopped.append(new)
    wait_master(rig.ovs, bridge, new, timeout=30)
    assert new.ready() and old.ready()  # both believe they lead
    flows = _flow_table(rig, bridge)
    assert any(first["ip"] in line for line in flows)

    with pytest.raises((ApiError, OSError)):
        place(old, "n2", "after")
    wait_until(lambda: not old.running(), timeout=15, what="the stale leader to step down")
    assert "stepping-down" in old.logfile.read_text() and "as stale" in old.logfile.read_text()
    assert _flow_table(rig, bridge) == flows  # nothing of "after" landed
    wait_until(lambda: switch_roles(rig.ovs, bridge) == {target(new): "master"}, timeout=10,
               what=lambda: f"the switch to see old go, not {switch_roles(rig.ovs, bridge)}")

    try:
        old.start(timeout=60)  # leads its own Lease again, generation 0 (or 1) < 6
    except ControllerDied:
        pass  # it left before its API answered: what is asserted next
    wait_until(lambda: not old.running(), timeout=30, what="the restarted stale leader to step down")
    assert old.logfile.read_text().count("as stale") == 2
    assert _flow_table(rig, bridge) == flows
    assert new.health()["stats"]["flow_mods"] == 0  # new found the switch as old left it: nothing to change
