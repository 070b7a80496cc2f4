"""Two controller replicas on the rig's real Open vSwitch and the session's real API server
(`store = "kubernetes"`, leader election on a Lease): the leader is master on the switch, the
follower slave and not ready; SIGKILL the leader under 10 ms pings and none is lost, the follower
takes over within the lease's period and sends no flow-mod. A split brain, two replicas that both
believe they lead, cannot both write: the switch refuses the older generation id, whose flows never
land, and that replica steps down. A Lease deleted and created again (its transitions back to 0)
does not lock the leader out of switches that remember a larger generation id."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import IPPOOLS, NODES, Kube, Missing
from controller.kube.lease import LEASES
from controller.kube.store import UPLINK_ANNOTATION
from deploy.lab import netns
from deploy.lab.control import ApiError, Controller, NodeSpec, PoolSpec
from deploy.lab.process import wait_until
from deploy.lab.replicas import cable, leader, master_granted, replicas, switch_roles, target, wait_master
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
    killed = time.time()
    first.stop(kill=True)
    # the Lease expires on second's clock a lease duration after the last renewal it saw (and it
    # looked at most a retry period late); a few seconds more for a loaded machine
    wait_until(lambda: master_granted(second, after=killed), timeout=FAST["lease_duration"] + FAST["retry_period"] + 3,
               what="the switch to make the follower master")
    wait_master(rig.ovs, bridge, second, timeout=10)  # Open vSwitch's own table agrees
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
    """Both believe they lead: `old` renews only every 20 s, and right after one of its renewals the
    Lease is given to `new` behind its back (as if old had been paused past its lease). new leads
    with generation 1 and takes the switch; old, still sure of itself, places a pod: the switch
    refuses its bundle (it is slave now) and its claim to be master again with generation 0 as
    stale, and old cannot raise its generation on the Lease (its write is based on an old
    version): it steps down. That pod's flows never land."""
    hosts, _ = segment
    old, new = two(rig, bridge, segment, k8s, k8s_namespace)
    old.election = {**old.election, "lease_duration": 60, "renew_deadline": 40, "retry_period": 20}
    cable(rig.ovs, bridge, [old, new])
    old.start(timeout=60)
    stopped.append(old)
    wait_until(old.ready, timeout=30, what="the old replica to lead")
    register(old, hosts, kube_clean)
    first = place(old, "n1", "before")
    new.start(timeout=60)
    stopped.append(new)
    wait_until(lambda: switch_roles(rig.ovs, bridge).get(target(new)) == "slave", timeout=30, what="new as slave")

    path = LEASES.path(namespace=k8s_namespace, name="underlay-controller")
    version = kube_clean.get(path)["metadata"]["resourceVersion"]
    lease = wait_until(lambda: (got := kube_clean.get(path))["metadata"]["resourceVersion"] != version and got,
                       timeout=30, what="old's next renewal")  # the next one is 20 s away
    given = time.time()
    kube_clean.replace(path, {**lease, "spec": {**lease["spec"], "holderIdentity": "controller-1", "leaseTransitions": 1}})
    wait_until(new.ready, timeout=10, what="new to lead")
    wait_until(lambda: master_granted(new, after=given), timeout=10, what="the switch to make new master")
    assert old.ready()  # both believe they lead
    flows = _flow_table(rig, bridge)
    assert any(first["ip"] in line for line in flows)

    with pytest.raises((ApiError, OSError)):
        place(old, "n2", "after")
    wait_until(lambda: not old.running(), timeout=15, what="the stale leader to step down")
    log = old.logfile.read_text()
    assert "as stale (it has seen 1)" in log and "stepping-down" in log and "generation-raised" not in log
    assert _flow_table(rig, bridge) == flows  # nothing of "after" landed
    wait_until(lambda: switch_roles(rig.ovs, bridge) == {target(new): "master"}, timeout=10,
               what=lambda: f"the switch to see old go, not {switch_roles(rig.ovs, bridge)}")
    assert new.health()["stats"]["flow_mods"] == 0  # new found the switch as old left it: nothing to change


def test_a_lease_created_again_outbids_the_generation_the_switches_remember(
        rig: Any, bridge: str, segment: Any, k8s: Any, k8s_namespace: str, kube_clean: Kube,
        stopped: list[Controller]) -> None:
    """The Lease had seen 7 transitions: the replica leads with generation 8. The Lease is deleted;
    the replica creates it again (transitions 0) and leads on, as client-go's candidates do. Killed
    and started again, it leads with generation 0: the switch refuses that as stale, and the
    replica raises the Lease past the switch's 8 with a conditional write, then is master with 9,
    sending no flow-mod."""
    path = LEASES.path(namespace=k8s_namespace, name="underlay-controller")
    kube_clean.create(LEASES.path(namespace=k8s_namespace), {
        "metadata": {"name": "underlay-controller"}, "spec": {"leaseDurationSeconds": 6, "leaseTransitions": 7}})
    (replica,) = replicas(1, workdir=rig.workdir / bridge, ns=rig.mgmt_ns, nodes={"n1": NodeSpec("n1")},
                          trusted={_dpid(rig, bridge): (segment[1].ofport,)}, pool=PoolSpec("198.19.255.0/24"),
                          kubeconfig=k8s.kubeconfig, lease_namespace=k8s_namespace, lease=FAST)
    cable(rig.ovs, bridge, [replica])
    replica.start(timeout=60)
    stopped.append(replica)
    wait_until(replica.ready, timeout=30, what="the replica to lead")
    wait_master(rig.ovs, bridge, replica, timeout=30)
    flows = _flow_table(rig, bridge)

    kube_clean.delete(path)
    wait_until(lambda: _transitions(kube_clean, path) == 0, timeout=15, what="the Lease made again")
    assert replica.ready()
    replica.restart(kill=True)
    wait_until(replica.ready, timeout=30, what="the replica to lead again")
    wait_until(lambda: "event=role role=master generation=9" in replica.logfile.read_text(), timeout=15,
               what="master with generation 9")
    assert "as stale (it has seen 8)" in replica.logfile.read_text()
    assert _transitions(kube_clean, path) == 9
    assert replica.health()["stats"]["flow_mods"] == 0
    assert _flow_table(rig, bridge) == flows


def _transitions(kube: Kube, path: str) -> int | None:
    try:
        return int(kube.get(path)["spec"].get("leaseTransitions", 0))
    except Missing:
        return None
