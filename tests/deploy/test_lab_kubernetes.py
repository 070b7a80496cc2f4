"""`underlay-lab up --kubernetes` end to end: the real control plane (API server, controller-manager,
scheduler), a kubelet stand-in per node doing the pods' network through the real CNI plugin, and
pods made by the real StatefulSet controller reached from the external host."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.config import new_client_from_config

from deploy.lab import netns, process
from labcli import running_lab

pytestmark = pytest.mark.rig
T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float = 60, what: str = "condition") -> T:
    return process.wait_until(condition, timeout=timeout, what=what)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("klab"), "--kubernetes", "--nodes", "2", "--pods-per-node", "1",
                     timeout=240) as run:
        yield run


@pytest.fixture(scope="module")
def status(lab) -> dict:
    return json.loads(lab("status", "--json").stdout)


@pytest.fixture(scope="module")
def core(status):
    api = new_client_from_config(status["kubeconfig"])
    yield client.CoreV1Api(api)
    api.close()


def pod_ips(core, selector: str) -> dict[str, str]:
    return {p.metadata.name: p.status.pod_ip for p in core.list_namespaced_pod("default", label_selector=selector).items
            if p.status.pod_ip and p.status.phase == "Running"}


def test_nodes_are_ready_and_pods_are_running_with_their_addresses(status, core):
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {"node1", "node2"}
    assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes.values())
    running = {p.metadata.name: (p.spec.node_name, p.status.pod_ip) for p in core.list_namespaced_pod("default").items}
    shown = {p["name"]: (p["node"], p["ip"]) for p in status["pods"]}
    assert running == shown == {"node1-pod1": ("node1", shown["node1-pod1"][1]), "node2-pod1": ("node2", shown["node2-pod1"][1])}
    assert all(netns.exists(p["netns"]) for p in status["pods"])
    assert status["store"] in ("kubernetes", "sqlite")


def test_demo_reaches_the_pods(lab):
    assert "all 2 pods reached" in lab("demo").stdout


def test_a_statefulset_gets_reachable_pods_and_loses_them_with_it(lab, status, core):
    apps = client.AppsV1Api(core.api_client)
    apps.create_namespaced_stateful_set("default", {
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                     "terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "pause"}]}}}})
    ips = wait_until(lambda: len(got := pod_ips(core, "app=db")) == 2 and got, what="db-0 and db-1 running")
    for ip in ips.values():
        assert lab("exec", "external", "--", "ping", "-c", "1", "-W", "2", ip).returncode == 0
    namespaces = {p["name"]: p["netns"] for p in json.loads(lab("status", "--json").stdout)["pods"]}
    assert {"db-0", "db-1"} <= set(namespaces)

    apps.delete_namespaced_stateful_set("db", "default")
    wait_until(lambda: not core.list_namespaced_pod("default", label_selector="app=db").items, what="db pods gone")
    wait_until(lambda: not netns.exists(namespaces["db-0"]) and not netns.exists(namespaces["db-1"]),
               what="the stand-ins' DEL")
    left = [p["name"] for p in json.loads(lab("status", "--json").stdout)["pods"]]
    assert "db-0" not in left and "db-1" not in left


def test_pod_add_makes_a_pod_object_and_pod_del_removes_it(lab, core):
    line = lab("pod", "add", "extra", "--node", "node2").stdout.split()
    name, node, ip = line[:3]
    pod = core.read_namespaced_pod("extra", "default")
    assert (name, node, pod.spec.node_name, pod.status.pod_ip) == ("extra", "node2", "node2", ip)
    assert lab("exec", "extra", "--", "ping", "-c", "1", "-W", "2", "198.18.0.2").returncode == 0

    lab("pod", "del", "extra")
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_pod("extra", "default")
    assert gone.value.status == 404
    bad = lab("pod", "add", "x", "--node", "node9", check=False)
    assert bad.returncode == 1 and "no node 'node9'" in bad.stderr


def test_a_failed_add_is_an_event_on_the_pod_and_is_retried(lab, core):
    """node2's agent is down: the CNI plugin cannot reach it, the pod gets kubelet's
    FailedCreatePodSandBox event with the plugin's message; once the agent is back the retry wins."""
    agent_pid = lab.state_dir.glob("*/nodes/node2/agent.pid")
    pidfile = next(agent_pid)
    from deploy.lab.process import stop_pidfile
    stop_pidfile(pidfile)
    core.create_namespaced_pod("default", {
        "metadata": {"name": "waits", "labels": {"app": "waits"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node2"}, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "pause"}]}})
    uid = core.read_namespaced_pod("waits", "default").metadata.uid

    def warnings():
        return [e for e in core.list_namespaced_event("default", field_selector=f"involvedObject.uid={uid}").items
                if e.reason == "FailedCreatePodSandBox"]

    (event, *_) = wait_until(warnings, what="a FailedCreatePodSandBox event")
    assert event.type == "Warning" and "ADD underlay" in event.message and event.source.host == "node2"
    assert core.read_namespaced_pod("waits", "default").status.pod_ip is None

    lab("restart", "agent", "node2")
    wait_until(lambda: pod_ips(core, "app=waits"), what="the retried ADD")
    core.delete_namespaced_pod("waits", "default")


def test_each_node_renews_its_lease(core):
    coordination = client.CoordinationV1Api(core.api_client)
    first = coordination.read_namespaced_lease("node1", "kube-node-lease").spec.renew_time
    wait_until(lambda: coordination.read_namespaced_lease("node1", "kube-node-lease").spec.renew_time > first,
               timeout=25, what="node1's lease renewal")


def test_down_stops_the_control_plane_and_the_stand_ins(tmp_path):
    state_dir = tmp_path / "klab-down"
    cli = [sys.executable, "-m", "deploy.lab.cli", "--state-dir", str(state_dir)]
    subprocess.run(cli + ["up", "--kubernetes", "--nodes", "1", "--pods-per-node", "1"], check=True,
                   capture_output=True, timeout=240)
    assert running_under(state_dir), "nothing of the lab runs"
    for _ in range(2):
        assert subprocess.run(cli + ["down"], capture_output=True, timeout=60).returncode == 0
    assert running_under(state_dir) == []
    assert not any(state_dir.iterdir())


def running_under(directory) -> list[str]:
    """Processes whose command line names `directory` (the control plane, stand-ins, controller)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(directory) in line and "ps -eo" not in line]
