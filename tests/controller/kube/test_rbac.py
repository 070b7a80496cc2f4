"""The controller's Kubernetes side needs no more than deploy/kubernetes/controller-rbac.yaml grants:
it runs as a ServiceAccount bound to that ClusterRole through a pod's whole life (pools, the store,
the caches, an Event, a node's uplink), and the API server refuses it nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import KubernetesConfig
from controller.errors import ControllerError
from controller.kube import wiring
from controller.kube.client import IPPOOLS, Kube
from controller.service import PodRequest, Service
from controller.store import Mode
from ctlfakes import RecordingFabric, make_config
from kubeenv import ensure_node

ROLE = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "controller-rbac.yaml"


def test_the_controller_role_is_enough(
    kube_clean: Kube, kube_as: Callable[[list[dict[str, Any]]], Path], k8s_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    ensure_node(kube_clean, "n2")
    kube_clean.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "web"},
                                       "spec": {"subnet": "198.18.8.0/24", "default": True}})  # fmt: skip
    kubeconfig = kube_as(yaml.safe_load(ROLE.read_text())["rules"])
    caplog.set_level(logging.WARNING)
    cluster = wiring.start(KubernetesConfig(kubeconfig=str(kubeconfig)), with_pools=True, timeout=30)
    try:
        config = make_config(pools={})
        store = cluster.store(config)
        service = Service(store, config, now=time.time, fabric=RecordingFabric())
        assert cluster.pools is not None
        cluster.pools.bind(service.set_pools)
        service.register_node("n2", mac="02:00:00:00:01:02", ip="198.18.0.12")
        service.allocate_and_place("n2", PodRequest("a", "eth0", k8s_namespace, "a", Mode.MACVLAN))
        with pytest.raises(ControllerError, match="is held by"):
            service.allocate_and_place("n2", PodRequest("b", "eth0", k8s_namespace, "b", Mode.MACVLAN, ip="198.18.8.1"))
        service.release("n2", "a", "eth0")
        store.write_late()
        store.sweep()
        assert cluster.view.namespace(k8s_namespace) is not None and cluster.view.node("n2") is not None
        assert cluster.view.pod_live(k8s_namespace, "nope") is None
        cluster.view.event({"metadata": {"name": "a", "namespace": k8s_namespace}}, reason="Test", message="hello")
        cluster.view.events.wait_idle()
        store.close()
    finally:
        cluster.stop()
    refused = [r.getMessage() for r in caplog.records if "forbidden" in r.getMessage().lower()]
    assert refused == []
