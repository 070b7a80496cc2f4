"""The ClusterView over watch caches, on the real API server: objects cut to what intent reads, a
cache miss answered by one live read, `pod_live` never from the cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import NODES, PODS, STATEFULSETS, Kube, Resource
from controller.kube.view import KubeView
from kubeenv import ensure_node

WAIT = 10.0
CONFIGMAPS = Resource("", "v1", "configmaps")


@pytest.fixture
def view(kube: Kube) -> Iterator[KubeView]:
    started = KubeView(kube).start()
    assert started.wait_synced(WAIT)
    yield started
    started.stop()


def make_pod(kube: Kube, namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, **metadata}, "spec": {"containers": [{"name": "c", "image": "none"}]}}
    return kube.create(PODS.path(namespace=namespace), body)


def test_a_pod_is_cut_to_what_intent_reads(kube: Kube, k8s_namespace: str, view: KubeView) -> None:
    owner = kube.create(CONFIGMAPS.path(namespace=k8s_namespace), {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
                 "controller": False, "blockOwnerDeletion": False}  # fmt: skip
    made = make_pod(kube, k8s_namespace, "web-0", labels={"app": "web"}, ownerReferences=[reference], annotations={
        "underlay.io/ip": "198.18.0.5", "ovn.kubernetes.io/mac_address": "02:00:00:00:00:05",
        "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}"})  # fmt: skip
    assert view.pods.wait_for(lambda pods: f"{k8s_namespace}/web-0" in pods, timeout=WAIT)
    del reference["blockOwnerDeletion"]
    pod = view.pod(k8s_namespace, "web-0")
    assert pod is not None and (pod["apiVersion"], pod["kind"], pod["status"]) == ("v1", "Pod", {"phase": "Pending"})
    assert pod["metadata"] == {
        "name": "web-0", "namespace": k8s_namespace, "uid": made["metadata"]["uid"], "labels": {"app": "web"},
        "annotations": {"underlay.io/ip": "198.18.0.5", "ovn.kubernetes.io/mac_address": "02:00:00:00:00:05"},
        "ownerReferences": [reference],
    }  # fmt: skip
    assert set(pod["spec"]) <= {"nodeName"}  # once the scheduler binds it
    assert view.pod(k8s_namespace, "nope") is None


def test_a_miss_reads_the_api_and_pod_live_never_reads_the_cache(kube: Kube, k8s_namespace: str) -> None:
    cold = KubeView(kube)  # no watch running: every read misses the cache
    made = make_pod(kube, k8s_namespace, "web-1")
    assert cold.pod(k8s_namespace, "web-1")["metadata"]["uid"] == made["metadata"]["uid"]  # type: ignore[index]
    warm = KubeView(kube).start()
    try:
        assert warm.wait_synced(WAIT)
        warm.pods.stop()  # the cache stops following: what it has now is all it will have
        kube.patch(PODS.path(namespace=k8s_namespace, name="web-1"), {"metadata": {"labels": {"now": "yes"}}})
        assert warm.pod(k8s_namespace, "web-1")["metadata"]["labels"] == {}  # type: ignore[index]
        assert warm.pod_live(k8s_namespace, "web-1")["metadata"]["labels"] == {"now": "yes"}  # type: ignore[index]
        kube.delete(PODS.path(namespace=k8s_namespace, name="web-1"))
        assert warm.pod(k8s_namespace, "web-1") is not None
        assert warm.pod_live(k8s_namespace, "web-1") is None
    finally:
        warm.stop()


def test_namespaces_statefulsets_and_nodes(kube: Kube, k8s_namespace: str, view: KubeView) -> None:
    kube.patch(Resource("", "v1", "namespaces").path(name=k8s_namespace),
               {"metadata": {"labels": {"team": "a"}, "annotations": {"underlay.io/default-ippool": "web", "other": "x"}}})  # fmt: skip
    sts = kube.create(STATEFULSETS.path(namespace=k8s_namespace), {
        "metadata": {"name": "db", "annotations": {"underlay.io/ip-list": "[]"}},
        "spec": {"replicas": 0, "ordinals": {"start": 2}, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"underlay.io/ippool": "web", "x": "y"}},
                              "spec": {"containers": [{"name": "c", "image": "none"}]}}}})  # fmt: skip
    ensure_node(kube, "view-n1", labels={"rack": "r1"})
    try:
        assert view.namespaces.wait_for(lambda ns: ns.get(k8s_namespace, {}).get("metadata", {}).get("labels", {}).get("team") == "a", timeout=WAIT)
        namespace = view.namespace(k8s_namespace)
        assert namespace["metadata"]["annotations"] == {"underlay.io/default-ippool": "web"}  # type: ignore[index]
        assert view.statefulsets.wait_for(lambda s: f"{k8s_namespace}/db" in s, timeout=WAIT)
        assert view.statefulset(k8s_namespace, "db") == {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": k8s_namespace, "uid": sts["metadata"]["uid"],
                         "annotations": {"underlay.io/ip-list": "[]"}},
            "spec": {"replicas": 0, "ordinals": {"start": 2}, "template": {"metadata": {"annotations": {"underlay.io/ippool": "web"}}}},
        }  # fmt: skip
        assert view.nodes.wait_for(lambda nodes: "view-n1" in nodes, timeout=WAIT)
        assert view.node("view-n1")["metadata"]["labels"] == {"rack": "r1"}  # type: ignore[index]
    finally:
        kube.delete(NODES.path(name="view-n1"))
