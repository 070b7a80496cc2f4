"""`underlay-lab up --kubernetes --kubelet` end to end: node1 runs a real kubelet with containerd and
kube-proxy (deploy/lab/realnode.py), node2 a stand-in; pods of a Deployment and a StatefulSet get their
network from containerd's CNI ADD of our plugin and are reached from the external host with ARP
answered by the switch; a StatefulSet pod deleted comes back with its address; `down` leaves nothing.

One lab for the module (about a minute to bring up on a loaded 2-core machine); the tests run in file
order, the last one takes the lab down and checks what is left."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.config import new_client_from_config

from deploy.lab import netns, process, realnode
from deploy.lab.kubenode import KUBELET_HEALTHZ_PORT, PAUSE_IMAGE, PROXY_HEALTHZ_PORT
from deploy.lab.lab import Lab
from labcli import lab_cli

pytestmark = pytest.mark.rig
T = TypeVar("T")
REAL = "node1"


def wait_until(condition: Callable[[], T], *, timeout: float = 90, what: str = "condition") -> T:
    return process.wait_until(condition, timeout=timeout, what=what)


@pytest.fixture(scope="module")
def images() -> list[Path]:
    """The pause and underlay images as containerd archives (deploy/image, built once per machine)."""
    from deploy.image import build

    try:
        archives = build.ensure(log=lambda line: None)
    except build.ImageError as error:  # type: ignore[attr-defined]
        pytest.fail(f"the images cannot be built here: {error}", pytrace=False)
    return list(archives.values())


@pytest.fixture(scope="module")
def lab(tmp_path_factory, images) -> Iterator[Any]:
    state_dir = tmp_path_factory.mktemp("kubelet")
    run = lab_cli(state_dir, timeout=300)
    run.state_dir = state_dir  # type: ignore[attr-defined]
    try:
        run("up", "--kubernetes", "--kubelet", "--nodes", "2", "--pods-per-node", "0",
            *(arg for image in images for arg in ("--image", str(image))))
        yield run
    finally:
        run("down", check=False)


@pytest.fixture(scope="module")
def status(lab) -> dict:
    return json.loads(lab("status", "--json").stdout)


@pytest.fixture(scope="module")
def api(status) -> Iterator[client.ApiClient]:
    api = new_client_from_config(status["kubeconfig"])
    yield api
    api.close()


@pytest.fixture(scope="module")
def core(api) -> Any:
    return client.CoreV1Api(api)


def node_netns(status: dict, name: str = REAL) -> str:
    return next(n["netns"] for n in status["nodes"] if n["name"] == name)


def ready_pods(core, selector: str) -> dict[str, Any]:
    return {p.metadata.name: p for p in core.list_namespaced_pod("default", label_selector=selector).items
            if p.status.pod_ip and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}


def template(app: str, **spec: Any) -> dict:
    return {"metadata": {"labels": {"app": app}}, "spec": {
        "nodeSelector": {"kubernetes.io/hostname": REAL}, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}], **spec}}


def test_node1_is_a_real_kubelet_on_containerd_and_ready(core, status):
    node = core.read_node(REAL)
    info = node.status.node_info
    assert info.container_runtime_version.startswith("containerd://1.")
    assert info.kubelet_version == "v1.36.3" and node.metadata.labels["underlay.io/kubelet"] == "real"
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == ["198.18.0.11"]
    for port in (KUBELET_HEALTHZ_PORT, PROXY_HEALTHZ_PORT):  # kubelet and kube-proxy, inside the node only
        answer = netns.run(node_netns(status), ["python3", "-c", "import urllib.request as u; "
                           f"print(u.urlopen('http://127.0.0.1:{port}/healthz', timeout=5).status)"], check=False)
        assert answer.stdout.strip() == "200", answer.stderr


def test_deployment_pods_get_underlay_addresses_from_containerds_cni_add(lab, api, core, status):
    client.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                              "template": template("web")}})
    pods = wait_until(lambda: len(got := ready_pods(core, "app=web")) == 2 and got, what="web pods Ready")
    records = [json.loads(p.read_text()) for p in Path(status["nodes"][0]["agent_socket"]).parent.glob("state/*.json")]
    by_pod = {r["name"]: r for r in records}
    for name, pod in pods.items():
        record = by_pod[name]  # the agent attached it, asked by our plugin that containerd ran
        assert record["ip"] == pod.status.pod_ip and record["namespace"] == "default"
        assert record["netns"].startswith("/var/run/netns/cni-")  # containerd's own namespace for the sandbox
    demo = lab("demo").stdout
    assert "all 2 pods reached from the external host; 2 of 2 ARP requests answered by the switch" in demo


def test_a_statefulset_pod_deleted_comes_back_with_its_address(lab, api, core):
    client.AppsV1Api(api).create_namespaced_stateful_set("default", {
        "metadata": {"name": "db"}, "spec": {"replicas": 1, "serviceName": "db",
                                             "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}})
    first = wait_until(lambda: ready_pods(core, "app=db").get("db-0"), what="db-0 Ready")
    core.delete_namespaced_pod("db-0", "default")
    again = wait_until(lambda: (p := ready_pods(core, "app=db").get("db-0")) and p.metadata.uid != first.metadata.uid
                       and p, what="db-0 made again and Ready")
    assert again.status.pod_ip == first.status.pod_ip and again.spec.node_name == REAL
    assert lab("exec", "external", "--", "ping", "-c", "1", "-W", "2", again.status.pod_ip).returncode == 0


def test_kubelets_http_readiness_probe_of_an_underlay_pod_passes(core):
    """kubelet probes from the node's namespace: the agent's host shim route reaches the pod."""
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    core.create_namespaced_pod("default", {"metadata": {"name": "probed", "labels": {"app": "probed"}},
                                           "spec": {**template("probed")["spec"], "containers": [{
                                               "name": "http", "image": "localhost/underlay:dev",
                                               "imagePullPolicy": "IfNotPresent",
                                               "command": ["python3", "-m", "http.server", "8080"],
                                               "readinessProbe": probe}]}})
    pod = wait_until(lambda: ready_pods(core, "app=probed").get("probed"), what="probed Ready by its HTTP probe")
    assert pod.status.container_statuses[0].ready


def test_containerd_restarted_keeps_the_pods_and_runs_new_ones(lab, api, core, status):
    the_lab = Lab(lab.state_dir)
    node = realnode.RealNode(the_lab.workdir / "nodes" / REAL, prefix=the_lab.prefix)
    before = {n: p.metadata.uid for n, p in ready_pods(core, "app=web").items()}
    node.restart_containerd(node_netns(status))
    client.AppsV1Api(api).patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    after = wait_until(lambda: len(got := ready_pods(core, "app=web")) == 3 and got, what="a third web pod")
    assert before.items() <= {n: p.metadata.uid for n, p in after.items()}.items()


def test_down_leaves_nothing_of_the_real_node(lab):
    prefix = Lab(lab.state_dir).prefix
    pod_namespaces = [p["netns"] for p in json.loads(lab("status", "--json").stdout)["pods"]]
    assert len([name for name in pod_namespaces if name.startswith("cni-")]) == 5  # web x3, db-0, probed
    lab("down")
    assert not list(Path(lab.state_dir).iterdir())
    for node in ("node1", "node2"):
        cgroup = realnode.kubenode.cgroup_name(prefix, node)
        assert not realnode.cgroup_pids(cgroup)
        assert not [h for h in realnode.hierarchies() if (h / cgroup).exists()]
    assert not realnode.mounts_under(Path(lab.state_dir))
    assert not [name for name in pod_namespaces if netns.exists(name)]
    leftover = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True).stdout
    assert str(lab.state_dir) not in leftover
