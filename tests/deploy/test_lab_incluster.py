"""`underlay-lab up --kubernetes --kubelet 2 --in-cluster` end to end: underlay runs as the cluster runs it,
deploy/kubernetes applied with the lab's overlay (deploy/lab/overlay) on two real kubelet nodes. The
controller Deployment's two replicas elect a leader (the only ready one) and both hold the switch's
OpenFlow connection (master and slave) over the management cables; the agent DaemonSet's pods
authenticate with their projected tokens (TokenReview). Pods of a Deployment and a StatefulSet get
their addresses through them and are reached from the external host, ARP answered by the switch; a
token of node1's agent is refused for node2; a StatefulSet pod comes back with its address; the leader
killed (SIGKILL and its pod force-deleted) under 10 ms pings loses none, the standby leads within the
lease period and sends no flow-mod; `down` leaves nothing.

One lab for the module; the tests run in file order and build on each other. About 3 minutes."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.config import new_client_from_config

from deploy.k8s import build
from deploy.lab import incluster, netns, process, realnode
from deploy.lab.lab import Lab
from labcli import running_lab
from test_lab_kubelet import images, wait_until  # noqa: F401 - a fixture: the images, built once per machine

pytestmark = pytest.mark.rig
NS = incluster.NAMESPACE
SERVICE_NAME = "underlay-controller.underlay-system.svc"
APPS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: pause, image: localhost/pause:3.10, imagePullPolicy: Never}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: pause, image: localhost/pause:3.10, imagePullPolicy: Never}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory, images) -> Iterator[Any]:
    with running_lab(tmp_path_factory.mktemp("incluster"), "--kubernetes", "--kubelet", "2", "--nodes", "2",
                     "--in-cluster", "--pods-per-node", "0",
                     *(arg for image in images for arg in ("--image", str(image))), timeout=600) as run:
        yield run


@pytest.fixture(scope="module")
def the_lab(lab) -> Lab:
    return Lab(lab.state_dir, progress=lambda _: None)


@pytest.fixture(scope="module")
def api(the_lab) -> Iterator[client.ApiClient]:
    api = new_client_from_config(the_lab.state.kubernetes["kubeconfig"])
    yield api
    api.close()


@pytest.fixture(scope="module")
def core(api) -> Any:
    return client.CoreV1Api(api)


def kubectl(the_lab: Lab, *args: str, stdin: str | None = None) -> str:
    argv = [str(build.binary_path("kubectl")), f"--kubeconfig={the_lab.state.kubernetes['kubeconfig']}", *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def controllers(core) -> dict[str, Any]:
    return {p.metadata.name: p for p in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=underlay-controller").items}


def leader(core) -> str:
    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease("underlay-controller", NS)
    return str(lease.spec.holder_identity)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def ask(the_lab: Lab, node_ip: str, method: str, path: str, *, token: str, body: Any = None) -> tuple[int, Any]:
    """The controller replica at `node_ip`'s REST API, from node1 (as its agent reaches it), TLS checked
    against the lab's CA with the Service's name."""
    context = ssl.create_default_context(cafile=str(the_lab.workdir / "incluster" / "ca.pem"))
    raw = netns.connect_tcp(the_lab.state.nodes["node1"].netns, node_ip, 6680)
    connection = http.client.HTTPSConnection(SERVICE_NAME, 6680, context=context)
    connection.sock = context.wrap_socket(raw, server_hostname=SERVICE_NAME)
    connection.request(method, path, body=None if body is None else json.dumps(body),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    status, data = response.status, json.loads(response.read() or b"null")
    connection.close()
    return status, data


@pytest.fixture(scope="module")
def node1_token(the_lab, core) -> str:
    """A token of node1's agent pod, as the kubelet projects it (audience underlay, bound to the pod)."""
    agent = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=underlay-agent",
                                     field_selector="spec.nodeName=node1").items[0].metadata.name
    return kubectl(the_lab, "-n", NS, "create", "token", "underlay-agent", "--audience", "underlay",
                   "--bound-object-kind", "Pod", "--bound-object-name", agent).strip()


def test_status_names_the_replicas_as_the_switchs_controllers(lab):
    status = json.loads(lab("status", "--json").stdout)
    assert status["switch"]["controller"] == ["tcp:198.18.0.11:6653", "tcp:198.18.0.12:6653"]
    assert {n["name"]: n["kubelet"] for n in status["nodes"]} == {"node1": "real", "node2": "real"}
    refused = lab("demo", check=False)
    assert refused.returncode != 0 and "runs as pods" in refused.stderr


def test_underlay_runs_as_pods_leader_ready_switch_at_both(the_lab, core):
    agents = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=underlay-agent").items
    assert sorted(p.spec.node_name for p in agents if ready(p)) == ["node1", "node2"]
    replicas = controllers(core)
    assert sorted(p.spec.node_name for p in replicas.values()) == ["node1", "node2"]
    assert [name for name, p in replicas.items() if ready(p)] == [leader(core)]  # readiness = leadership
    targets = the_lab.rig.ovs.vsctl("--columns=target,is_connected", "list", "controller")
    assert targets.count("is_connected        : true") == 2, targets


def test_deployment_and_statefulset_pods_reached_from_external(the_lab, core):
    kubectl(the_lab, "apply", "-f", "-", stdin=APPS)
    kubectl(the_lab, "rollout", "status", "deploy/web", "--timeout=120s")
    kubectl(the_lab, "rollout", "status", "statefulset/db", "--timeout=120s")
    pods = the_lab.pods()
    assert {"db-0", "db-1"} <= set(pods) and sum(name.startswith("web-") for name in pods) == 2
    state = the_lab.state
    for pod in pods.values():
        before = the_lab._responder_packets(state, pod.ip)
        assert netns.run(state.external["netns"], ["arping", "-c", "1", "-w", "2", "-I", "eth0", pod.ip],
                         check=False).returncode == 0, pod
        assert the_lab._responder_packets(state, pod.ip) > before, f"{pod.name}: ARP not answered by the switch"
        assert netns.run(state.external["netns"], ["ping", "-n", "-c", "1", "-W", "2", pod.ip],
                         check=False).returncode == 0, pod


def test_agent_token_for_another_node_is_refused(the_lab, core, node1_token):
    address = the_lab.state.nodes[controllers(core)[leader(core)].spec.node_name].ip
    status, body = ask(the_lab, address, "POST", "/v1/nodes/node2/pods", token=node1_token,
                       body={"namespace": "default", "name": "evil", "container_id": "c" * 12, "ifname": "eth0"})
    assert status == 403 and "may not act for node node2" in body["error"], body


def test_statefulset_pod_comes_back_with_its_address(the_lab, core):
    before = core.read_namespaced_pod("db-0", "default").status.pod_ip
    kubectl(the_lab, "delete", "pod", "db-0", "--wait=true")
    kubectl(the_lab, "wait", "--for=condition=Ready", "pod/db-0", "--timeout=90s")
    assert core.read_namespaced_pod("db-0", "default").status.pod_ip == before


def test_leader_killed_loses_no_ping_and_sends_no_flow_mod(the_lab, core, node1_token):
    old = leader(core)
    old_pod = controllers(core)[old]
    standby = next(name for name in controllers(core) if name != old)
    pods = the_lab.pods()
    external = the_lab.state.external["netns"]
    pings = [subprocess.Popen(netns.exec_argv(external, ["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-w", "30", pod.ip]),
                              stdout=subprocess.PIPE, text=True) for pod in pods.values()]
    node_ns = the_lab.state.nodes[old_pod.spec.node_name].netns
    process_id = next(pid for pid in realnode.cgroup_pids(realnode.kubenode.cgroup_name(the_lab.prefix, old_pod.spec.node_name))
                      if b"underlay-controller" in Path(f"/proc/{pid}/cmdline").read_bytes()
                      and os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{node_ns}").st_ino)
    os.kill(process_id, signal.SIGKILL)
    kubectl(the_lab, "-n", NS, "delete", "pod", old, "--grace-period=0", "--force", "--wait=false")
    wait_until(lambda: leader(core) == standby, timeout=30, what=f"{standby} to take the Lease")
    new_ip = the_lab.state.nodes[controllers(core)[standby].spec.node_name].ip
    status, health = wait_until(lambda: (r := ask(the_lab, new_ip, "GET", "/v1/health", token=node1_token))[1].get("stats") and r,
                                what="the new leader's health with its counters")
    assert status == 200 and health["stats"]["flow_mods"] == 0, health["stats"]
    for ping, pod in zip(pings, pods.values()):
        out, _ = ping.communicate(timeout=60)
        assert " 0% packet loss" in out, f"{pod.name}: {out}"
    kubectl(the_lab, "scale", "deploy/web", "--replicas=3")
    kubectl(the_lab, "rollout", "status", "deploy/web", "--timeout=90s")  # an ADD through the new leader


def test_down_leaves_nothing(lab, the_lab):
    lab("down")
    assert not realnode.mounts_under(lab.state_dir)
    for node in ("node1", "node2"):
        assert not realnode.cgroup_pids(realnode.kubenode.cgroup_name(the_lab.prefix, node))
    assert not netns.list_names(f"{the_lab.prefix}-")
