"""underlay itself in the lab's cluster (`underlay-lab up --kubernetes --kubelet N --in-cluster`): the
controller Deployment and the agent DaemonSet of deploy/kubernetes, applied with the lab's overlay
(deploy/lab/overlay), run as pods from localhost/underlay:dev on the real kubelet nodes, instead of
the lab's own controller and agent processes.

What the lab adds around the manifests, and why:
- a management cable per node: a veth from the management namespace (where the switch's Open vSwitch
  runs) to the node (`mgmt0`), with /32 routes both ways. The controller replicas are hostNetwork pods
  listening on their node's address inside the node; the switch connects to every replica there
  (`set-controller tcp:NODE1:6653 tcp:NODE2:6653`), over this cable, never through its own datapath.
  Nodes reach each other's addresses over it too (the management namespace forwards): an agent must
  reach the leader before its node is registered, and until then the switch (fail_mode=secure) drops
  its node's frames. A real cluster has the same need, met by its management network.
- the API server at 127.0.0.1:6443 inside every node (deploy/lab/tcpforward.py), which the overlay
  gives the controller as KUBERNETES_SERVICE_HOST/PORT (testenv's `kubernetes` Service has no
  endpoints: it runs with --endpoint-reconciler-type=none on the host's loopback);
- the TLS Secret and the CA ConfigMap README's cluster section has a user make, from deploy/lab/pki.py;
- every node real: an agent proves its node with its pod's projected token, which only a real
  kubelet mounts; the hostPaths stay one per node through each node's mount namespace (mountns.py).
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from deploy.k8s import build
from deploy.lab import netns, pki
from deploy.lab.kubelab import KubeLabError, KubeSide
from deploy.lab.process import wait_until
from deploy.lab.rig import Rig

OVERLAY = Path(__file__).resolve().parent / "overlay"
NAMESPACE = "underlay-system"
API_PORT_IN_NODE = 6443  # the overlay's KUBERNETES_SERVICE_PORT
MGMT_IP = "198.19.0.1"  # the management namespace's end of every management cable
MGMT_IFNAME = "mgmt0"
OPENFLOW_PORT = 6653
NODES = 2  # the overlay's controller config pins node1 and node2 to switch ports 2 and 3


def cable_management(rig: Rig, nodes: Sequence[tuple[str, str, int]], *, service_cidr: str) -> None:
    """A management cable to each node (netns, address, switch port), routes to the node's address
    from the management namespace and to every other node's through it. The service range is routed
    there too: a lab node has no default route, and a connection to a ClusterIP needs some route
    before kube-proxy's DNAT (in OUTPUT, after routing) gives it its real destination."""
    netns.set_sysctl(rig.mgmt_ns, "net.ipv4.ip_forward", "1")
    for node_ns, ip, port in nodes:
        outside = f"{rig.prefix}g{port}"
        netns.add_veth(ns_a=rig.mgmt_ns, name_a=outside, ns_b=node_ns, name_b=f"{rig.prefix}n{port}",
                       final_b=MGMT_IFNAME)
        netns.run(rig.mgmt_ns, ["ip", "addr", "add", f"{MGMT_IP}/32", "dev", outside])
        netns.run(rig.mgmt_ns, ["ip", "route", "add", f"{ip}/32", "dev", outside, "src", MGMT_IP])
        netns.run(node_ns, ["ip", "route", "add", f"{MGMT_IP}/32", "dev", MGMT_IFNAME])
        netns.run(node_ns, ["ip", "route", "add", service_cidr, "via", MGMT_IP, "dev", MGMT_IFNAME])
        for _, other, _ in nodes:
            if other != ip:
                netns.run(node_ns, ["ip", "route", "add", f"{other}/32", "via", MGMT_IP, "dev", MGMT_IFNAME])


def controller_targets(node_ips: Sequence[str]) -> list[str]:
    """What the switch connects to: every replica's OpenFlow port, wherever it may be scheduled."""
    return [f"tcp:{ip}:{OPENFLOW_PORT}" for ip in node_ips]


def install(kube: KubeSide, directory: Path) -> None:
    """The TLS Secret and CA ConfigMap, then `kubectl apply -k` of the lab's overlay."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = pki.Authority.create(directory, name="underlay lab controller CA")
    cert, key = authority.issue(directory, "controller", dns=pki.CONTROLLER_NAMES)
    with kube.api() as api:
        core: Any = client.CoreV1Api(api)
        _create(core.create_namespace, {"metadata": {"name": NAMESPACE}})
        _create(lambda body: core.create_namespaced_secret(NAMESPACE, body), {
            "metadata": {"name": "underlay-controller-tls"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": _b64(cert), "tls.key": _b64(key)}})
        _create(lambda body: core.create_namespaced_config_map(NAMESPACE, body), {
            "metadata": {"name": "underlay-ca"}, "data": {"ca.crt": authority.path.read_text()}})
    kubectl(kube, "apply", "-k", str(OVERLAY))


def kubectl(kube: KubeSide, *args: str) -> str:
    argv = [str(build.binary_path("kubectl")), f"--kubeconfig={kube.kubeconfig}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise KubeLabError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def wait_running(kube: KubeSide, *, nodes: int, timeout: float = 240) -> None:
    """Until an agent is ready on each of `nodes` nodes and a controller replica leads (ready: readiness
    is leadership, so one replica is ready, the other runs as standby)."""
    with kube.api() as api:
        apps: Any = client.AppsV1Api(api)

        def up() -> bool:
            agents = apps.read_namespaced_daemon_set_status("underlay-agent", NAMESPACE).status
            controller = apps.read_namespaced_deployment_status("underlay-controller", NAMESPACE).status
            return (agents.number_ready or 0) >= nodes and (controller.ready_replicas or 0) >= 1

        wait_until(up, timeout=timeout, error=KubeLabError,
                   what=lambda: f"underlay's agents on {nodes} nodes and a leading controller "
                                f"({_pods_summary(kube)})")


def wait_switch_connected(rig: Rig, bridge: str, *, replicas: int, timeout: float = 60) -> None:
    """Until the switch holds an OpenFlow connection to `replicas` controllers (it retries with a
    backoff of up to 8 s, so the first may come seconds after the pods listen)."""
    def connected() -> int:
        return rig.ovs.vsctl("--columns=is_connected", "find", "controller", "is_connected=true").count("true")

    wait_until(lambda: connected() >= replicas, timeout=timeout, error=KubeLabError,
               what=lambda: f"switch {bridge} connected to {replicas} controller replicas ({connected()} now)")


def _pods_summary(kube: KubeSide) -> str:
    try:
        return " ".join(kubectl(kube, "-n", NAMESPACE, "get", "pods", "-o", "wide", "--no-headers").split())
    except KubeLabError as error:
        return str(error)


def _create(create: Any, body: dict[str, Any]) -> None:
    try:
        create(body)
    except client.ApiException as error:
        if error.status != 409:
            raise


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
