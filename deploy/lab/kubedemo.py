"""`underlay-lab demo --kubernetes`: what users get from the cluster's API, shown on the running lab.

Three things, each checked and pinged from the external host:
- a fixed address: a Pod annotated `underlay.io/ip` gets exactly that address;
- a pool: an IPPool `demo` and a StatefulSet whose pod template names it (`underlay.io/ippool`);
- stickiness: `kubectl delete pod sticky-0`; the StatefulSet controller makes the pod again (a new
  UID) and it comes back with the same address.
The demo's objects are removed first, so it can run again; they are left afterwards to look at
(`kubectl get ipallocations`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from deploy.lab.kubelab import NAMESPACE, POD_IMAGE, KubeLabError, KubeSide
from deploy.lab.process import wait_until

POOL = "demo"
POOL_RANGE = ("198.18.0.200", "198.18.0.219")
FIXED_POD, FIXED_IP = "fixed", "198.18.0.150"
STATEFULSET = "sticky"
TIMEOUT = 60


@dataclass(frozen=True)
class Row:
    what: str
    pod: str
    node: str
    ip: str
    expected: str
    ok: bool  # the address is the one expected
    ping: bool  # the external host reached it while the pod ran


def run(kube: KubeSide, *, subnet: str, node: str, ping: Callable[[str], bool]) -> list[Row]:
    with kube.api() as api:
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        _clean(kube, core, apps, custom)
        custom.create_cluster_custom_object("underlay.io", "v1alpha1", "ippools", {
            "apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
            "spec": {"subnet": subnet, "ips": ["-".join(POOL_RANGE)]}})
        _, fixed = kube.add_pod(FIXED_POD, node=node, ip=FIXED_IP, timeout=TIMEOUT)
        rows = [Row("fixed address (underlay.io/ip)", f"{NAMESPACE}/{FIXED_POD}", node, fixed.ip, FIXED_IP,
                    fixed.ip == FIXED_IP, ping(fixed.ip))]
        apps.create_namespaced_stateful_set(NAMESPACE, _statefulset())
        first = _pod_of_statefulset(kube, core, avoid=None)
        low, high = (ipaddress.IPv4Address(a) for a in POOL_RANGE)
        rows.append(Row(f"pool {POOL} (underlay.io/ippool)", f"{NAMESPACE}/{STATEFULSET}-0", first[1], first[2],
                        "-".join(POOL_RANGE), low <= ipaddress.IPv4Address(first[2]) <= high, ping(first[2])))
        core.delete_namespaced_pod(f"{STATEFULSET}-0", NAMESPACE)
        again = _pod_of_statefulset(kube, core, avoid=first[0])
        rows.append(Row("after kubectl delete pod", f"{NAMESPACE}/{STATEFULSET}-0", again[1], again[2],
                        f"{first[2]} (kept)", again[2] == first[2], ping(again[2])))
    return rows


def _statefulset() -> dict[str, Any]:
    labels = {"app": STATEFULSET}
    return {"metadata": {"name": STATEFULSET}, "spec": {
        "replicas": 1, "serviceName": STATEFULSET, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels, "annotations": {"underlay.io/ippool": POOL}},
                     "spec": {"terminationGracePeriodSeconds": 0,
                              "containers": [{"name": "pause", "image": POD_IMAGE}]}}}}


def _pod_of_statefulset(kube: KubeSide, core: Any, *, avoid: str | None) -> tuple[str, str, str]:
    """(uid, node, address) of the StatefulSet's pod once it runs, other than the one of UID `avoid`."""
    found: list[tuple[str, str, str]] = []

    def running() -> bool:
        pods = {a.uid: (node, a.ip) for node, a in kube.attached() if a.name == f"{STATEFULSET}-0"}
        pod = _read(core, f"{STATEFULSET}-0")
        if pod is None or pod.metadata.uid == avoid or pod.metadata.uid not in pods or not pod.status.pod_ip:
            return False
        found.append((pod.metadata.uid, *pods[pod.metadata.uid]))
        return True

    wait_until(running, timeout=TIMEOUT, error=KubeLabError, what=f"pod {NAMESPACE}/{STATEFULSET}-0 to run")
    return found[-1]


def _read(core: Any, name: str) -> Any:
    try:
        return core.read_namespaced_pod(name, NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _clean(kube: KubeSide, core: Any, apps: Any, custom: Any) -> None:
    """Remove a previous run's objects and wait until their pods are gone."""
    for delete, name in ((apps.delete_namespaced_stateful_set, STATEFULSET),
                         (core.delete_namespaced_pod, FIXED_POD)):
        try:
            delete(name, NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
    wait_until(lambda: not any(a.name in (FIXED_POD, f"{STATEFULSET}-0") for _, a in kube.attached())
               and _read(core, FIXED_POD) is None and _read(core, f"{STATEFULSET}-0") is None,
               timeout=TIMEOUT, error=KubeLabError, what="the previous demo's pods to go")
    try:
        custom.delete_cluster_custom_object("underlay.io", "v1alpha1", "ippools", POOL)
    except client.ApiException as error:
        if error.status != 404:
            raise
