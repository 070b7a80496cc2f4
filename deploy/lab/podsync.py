"""What the lab's kubelet stand-in does about its node's pods, decided without I/O.

The stand-in (deploy/lab/kubelet.py) is the network half of a kubelet: it watches the Pods bound to
its node and gives each a network namespace and a CNI ADD, reports the address in the Pod's status,
and runs DEL when the pod goes. This module holds the decisions and the objects it writes, as plain
dicts and dataclasses: `plan` compares the pods the API shows with the attachments the node has;
the status builders say what the API server gets. Times come in as arguments (RFC 3339 strings).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Object = dict[str, Any]
KUBELET_VERSION = "v1.36.3-underlay-lab"
NETNS_MAX = 64  # longer namespace names are cut and given a hash, so every pod's name stays unique


@dataclass(frozen=True)
class Attached:
    """A pod interface this node made: what DEL needs later (the cached ADD result) and what the
    lab shows (address, MAC, namespace)."""

    uid: str
    namespace: str
    name: str
    container_id: str
    netns: str
    ip: str
    mac: str
    result: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Plan:
    add: tuple[Object, ...] = ()  # pods that need a network: ADD
    delete: tuple[Attached, ...] = ()  # attachments whose pod is gone or going: DEL
    finalize: tuple[Object, ...] = ()  # terminating pods with no network left: delete for good
    report: tuple[tuple[Object, Attached], ...] = ()  # attached pods whose status lacks the address


def uid_of(pod: Object) -> str:
    return str(pod["metadata"]["uid"])


def key_of(pod: Object) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def terminating(pod: Object) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def wants_network(pod: Object, node: str) -> bool:
    """A pod on `node`, not using the host's network, neither finished nor being deleted."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (spec.get("nodeName") == node and not spec.get("hostNetwork") and not terminating(pod)
            and status.get("phase") not in ("Succeeded", "Failed"))


def plan(pods: Iterable[Object], attached: Mapping[str, Attached], *, node: str) -> Plan:
    """Each pod of `pods` (this node's, by UID) against `attached` (by UID).

    A pod deleted and made again under the same name (a StatefulSet's) has a new UID: its old
    attachment is deleted and the new pod added, never confused."""
    live = {uid_of(pod): pod for pod in pods}
    add, report, finalize = [], [], []
    for uid, pod in live.items():
        if wants_network(pod, node):
            if uid not in attached:
                add.append(pod)
            elif (pod.get("status") or {}).get("podIP") != attached[uid].ip:
                report.append((pod, attached[uid]))
        elif terminating(pod) and uid not in attached:
            finalize.append(pod)
    delete = [a for uid, a in attached.items() if uid not in live or not wants_network(live[uid], node)]
    return Plan(tuple(add), tuple(delete), tuple(finalize), tuple(report))


def netns_name(prefix: str, namespace: str, name: str) -> str:
    """`<prefix>-<namespace>.<name>`: a namespace name has no dot, so no pod's collides with a lab
    node's or another pod's."""
    full = f"{prefix}-{namespace}.{name}"
    if len(full) <= NETNS_MAX:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{full[:NETNS_MAX - 9]}-{digest}"


def cni_args(pod: Object, container_id: str) -> dict[str, str]:
    """CNI_ARGS as kubelet (dockershim, containerd, CRI-O) sets them."""
    meta = pod["metadata"]
    return {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": meta["namespace"], "K8S_POD_NAME": meta["name"],
            "K8S_POD_INFRA_CONTAINER_ID": container_id, "K8S_POD_UID": meta["uid"]}


def running_status(pod: Object, attached: Attached, *, host_ip: str, now: str) -> Object:
    """The status a kubelet writes once the pod's sandbox has its network and its containers run:
    Ready, so a StatefulSet's OrderedReady rollout goes on to the next ordinal."""
    containers = (pod.get("spec") or {}).get("containers") or []
    conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                  for kind in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")]
    return {"status": {
        "phase": "Running", "podIP": attached.ip, "podIPs": [{"ip": attached.ip}], "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}], "startTime": now, "conditions": conditions,
        "containerStatuses": [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "started": True,
            "restartCount": 0, "containerID": f"underlay-lab://{attached.container_id}",
            "state": {"running": {"startedAt": now}}} for c in containers],
    }}


def node_object(name: str, *, labels: Mapping[str, str] | None = None) -> Object:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        **(labels or {})}}}


def node_status(name: str, *, ip: str, now: str, max_pods: int = 110) -> Object:
    """Ready, room for `max_pods`, the node's address: what the scheduler and the node controller read."""
    healthy = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
               ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
               ("PIDPressure", "False", "KubeletHasSufficientPID"),
               ("Ready", "True", "KubeletReady")]
    capacity = {"cpu": "2", "memory": "4Gi", "pods": str(max_pods), "ephemeral-storage": "10Gi"}
    return {"status": {
        "conditions": [{"type": kind, "status": status, "reason": reason, "message": "underlay-lab stand-in",
                        "lastHeartbeatTime": now, "lastTransitionTime": now} for kind, status, reason in healthy],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "capacity": capacity, "allocatable": capacity,
        "nodeInfo": {"machineID": name, "systemUUID": name, "bootID": name, "kernelVersion": "",
                     "osImage": "underlay lab", "containerRuntimeVersion": "underlay-lab://0",
                     "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": "amd64"},
    }}


def lease_object(node: str, *, node_uid: str, now: str, duration: int = 40) -> Object:
    """The node's heartbeat (kube-node-lease/<node>), owned by its Node as kubelet's is."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": now}}


def sandbox_failed_event(pod: Object, *, node: str, message: str, now: str) -> Object:
    """What kubelet records when a sandbox's network cannot be set up (`kubectl describe pod`)."""
    meta = pod["metadata"]
    return {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"],
                               "name": meta["name"], "uid": meta["uid"]},
            "reason": "FailedCreatePodSandBox", "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet", "host": node}}
