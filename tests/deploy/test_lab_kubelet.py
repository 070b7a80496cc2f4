"""`underlay-lab up --kubernetes --kubelet 2` end to end: both nodes run a real kubelet with containerd and
kube-proxy in their namespaces (deploy/lab/realnode.py). Pods of a Deployment and a StatefulSet get
their network from containerd's CNI ADD of our plugin and are reached from the external host with ARP
answered by the switch; kubelet's HTTP readiness probes reach them; a pod reaches a ClusterIP whose
backend is on the other node; a StatefulSet pod deleted comes back with its address; containerd
restarted keeps its pods; `down` leaves nothing.

One lab for the module; the tests run in file order and build on each other (the last takes the lab
down and checks what is left). About 1.5 minutes on a loaded 2-core machine."""

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
from deploy.lab.kubelab import KubeLabError, default_images
from deploy.lab.lab import Lab
from labcli import running_lab

pytestmark = pytest.mark.rig
T = TypeVar("T")
REAL = "node1"
UNDERLAY_IMAGE = "localhost/underlay:dev"
HTTP_GET = ["python3", "-c", "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).status)"]


def wait_until(condition: Callable[[], T], *, timeout: float = 90, what: str = "condition") -> T:
    return process.wait_until(condition, timeout=timeout, what=what)


@pytest.fixture(scope="module")
def images() -> list[Path]:
    """The pause and underlay images as containerd archives (deploy/image, built once per machine)."""
    try:
        return default_images()
    except KubeLabError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, images) -> Iterator[Any]:
    with running_lab(tmp_path_factory.mktemp("kubelet"), "--kubernetes", "--kubelet", "2", "--nodes", "2",
                     "--pods-per-node", "0", *(arg for image in images for arg in ("--image", str(image)))) as run:
        yield run


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


def template(app: str) -> dict:
    return {"metadata": {"labels": {"app": app}}, "spec": {
        "nodeSelector": {"kubernetes.io/hostname": REAL}, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}]}}


def http_template(app: str, **spec: Any) -> dict:
    """Pods of our image serving HTTP on 8080, Ready when kubelet's HTTP probe gets an answer."""
    return {"metadata": {"labels": {"app": app}}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
        "name": "http", "image": UNDERLAY_IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "http.server", "8080"],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}], **spec}}


def http_status(namespace: str, url: str) -> str:
    return netns.run(namespace, [*HTTP_GET, url], check=False).stdout.strip()


def agent_records(status: dict, node: str) -> dict[str, dict]:
    """What node's agent attached, by pod name (its state directory beside its socket)."""
    socket = next(n["agent_socket"] for n in status["nodes"] if n["name"] == node)
    return {(r := json.loads(p.read_text()))["name"]: r for p in Path(socket).parent.glob("state/*.json")}


def test_nodes_are_real_kubelets_on_containerd_and_ready(core, status):
    assert [(n["name"], n["kubelet"]) for n in status["nodes"]] == [("node1", "real"), ("node2", "real")]
    for name, ip in (("node1", "198.18.0.11"), ("node2", "198.18.0.12")):
        node = core.read_node(name)
        info = node.status.node_info
        assert info.container_runtime_version.startswith("containerd://1.")
        assert info.kubelet_version == "v1.36.3" and node.metadata.labels["underlay.io/kubelet"] == "real"
        assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == [ip]
        for port in (KUBELET_HEALTHZ_PORT, PROXY_HEALTHZ_PORT):  # kubelet and kube-proxy, inside the node only
            assert http_status(node_netns(status, name), f"http://127.0.0.1:{port}/healthz") == "200"


def test_deployment_pods_get_addresses_from_containerds_cni_add_and_pass_kubelets_http_probe(lab, api, core, status):
    """One web pod per node, Ready only once kubelet's HTTP readiness probe reached it: kubelet probes
    from the node's namespace, through the agent's host shim."""
    spread = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}}
    client.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                              "template": http_template("web", affinity=spread)}})
    pods = wait_until(lambda: len(got := ready_pods(core, "app=web")) == 2 and got, what="web pods Ready")
    assert {p.spec.node_name for p in pods.values()} == {"node1", "node2"}
    for pod in pods.values():
        assert pod.spec.containers[0].readiness_probe.http_get.port == 8080
        record = agent_records(status, pod.spec.node_name)[pod.metadata.name]  # the agent attached it, asked
        assert record["ip"] == pod.status.pod_ip and record["namespace"] == "default"  # by our plugin,
        assert record["netns"].startswith("/var/run/netns/cni-")  # which containerd ran for its sandbox
    demo = lab("demo").stdout
    assert "all 2 pods reached from the external host; 2 of 2 ARP requests answered by the switch" in demo


def test_a_pod_reaches_a_clusterip_whose_backend_is_on_the_other_node(lab, core):
    """kube-proxy of node1 (in its namespace) DNATs the ClusterIP and masquerades: the pod's route to
    the service CIDR through its node's shim is what brings the packets there."""
    pods = {p.spec.node_name: p for p in ready_pods(core, "app=web").values()}
    core.patch_namespaced_pod(pods["node2"].metadata.name, "default", {"metadata": {"labels": {"role": "backend"}}})
    service = core.create_namespaced_service("default", {
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "web", "role": "backend"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    assert service.spec.cluster_ip.startswith("192.0.2.")
    discovery = client.DiscoveryV1Api(core.api_client)
    wait_until(lambda: [a for s in discovery.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=backend").items for e in s.endpoints or []
        for a in e.addresses] == [pods["node2"].status.pod_ip], what="the backend's endpoint")
    url = f"http://{service.spec.cluster_ip}/"
    assert wait_until(lambda: lab("exec", pods["node1"].metadata.name, "--", *HTTP_GET, url, check=False)
                      .stdout.strip() == "200", timeout=30, what=f"{url} from node1's pod")


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


def test_containerd_restarted_keeps_the_pods_and_runs_new_ones(lab, api, core, status):
    the_lab = Lab(lab.state_dir)
    node = realnode.RealNode(the_lab.workdir / "nodes" / REAL, prefix=the_lab.prefix)
    before = {n: p.metadata.uid for n, p in ready_pods(core, "app=db").items()}
    node.restart_containerd(node_netns(status))
    client.AppsV1Api(api).patch_namespaced_stateful_set_scale("db", "default", {"spec": {"replicas": 2}})
    after = wait_until(lambda: len(got := ready_pods(core, "app=db")) == 2 and got, what="db-1 Ready")
    assert before.items() <= {n: p.metadata.uid for n, p in after.items()}.items()


def test_down_leaves_nothing_of_the_real_nodes(lab):
    prefix = Lab(lab.state_dir).prefix
    pod_namespaces = [p["netns"] for p in json.loads(lab("status", "--json").stdout)["pods"]]
    assert len([name for name in pod_namespaces if name.startswith("cni-")]) == 4  # web x2, db-0, db-1
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
