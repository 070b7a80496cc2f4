"""Intent on the real API server: the cluster's objects decide what a pod gets, and failures are Events.

Everything Kubernetes here is real: the session's kube-apiserver, controller-manager (its StatefulSet
controller makes the pods, its garbage collector deletes them) and scheduler (it binds them to Node
objects); the ClusterView is the controller's own over watch caches (controller/kube/view.py), the
pools are IPPool objects applied live (controller/kube/pools.py), the store is the Kubernetes one
(IPAllocation objects) or SQLite. No kubelet runs, so each test does the CNI side itself: it calls the
service with the pod's namespace, name and UID, as the node agent does for every pod kubelet starts.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import PoolConfig
from controller.errors import AddressInUse, NoPoolMatches
from controller.kube.client import EVENTS, IPALLOCATIONS, IPPOOLS, NAMESPACES, PODS, STATEFULSETS, Kube
from controller.kube.events import COMPONENT
from controller.kube.pools import PoolManager
from controller.kube.store import KubeStore
from controller.kube.view import KubeView
from controller.leaks import LeakCollector
from controller.service import PodRequest, Service
from controller.store import Mode, SqliteStore

from ctlfakes import STORE_KINDS, RecordingFabric, make_config

WAIT = 30.0
NODE_MAC = "02:00:00:00:01:01"


class Pools:
    """The service's pools as the IPPool watch hands them over; `wait` until some have arrived."""

    def __init__(self, service: Service) -> None:
        self.service, self.names, self._changed = service, set[str](), threading.Condition()

    def apply(self, configs: list[PoolConfig]) -> None:
        self.service.set_pools(configs)
        with self._changed:
            self.names = {config.name for config in configs}
            self._changed.notify_all()

    def wait(self, *names: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: set(names) <= self.names, timeout=WAIT), f"pools {names} not applied"


@pytest.fixture
def cluster(kube_clean: Kube) -> Iterator[KubeView]:
    view = KubeView(kube_clean).start()
    assert view.wait_synced(WAIT)
    yield view
    view.stop()


@pytest.fixture
def node(k8s: Any) -> str:
    """A Node the scheduler binds pods to; labelled for the node-selector tests."""
    name = f"n-{secrets.token_hex(3)}"
    k8s.create_node(name, labels={"rack": "r1"})
    return name


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def controller(tmp_path: Path, kube_clean: Kube, cluster: KubeView, node: str, store_kind: str
               ) -> Iterator[tuple[Service, Pools]]:
    config = make_config(nodes={node: {"token": "t", "dpid": 1, "port": 3}}, pools={})
    store = SqliteStore(tmp_path / "store.sqlite") if store_kind == "sqlite" else KubeStore(kube_clean, cooldown=30)
    service = Service(store, config, now=time.time, fabric=RecordingFabric(), cluster=cluster)
    service.register_node(node, mac=NODE_MAC, ip="198.18.9.11")
    pools = Pools(service)
    manager = PoolManager(kube_clean).start()
    assert manager.wait_synced(WAIT)
    manager.bind(pools.apply)
    yield service, pools
    manager.stop()
    service.store.close()


def ippool(kube: Kube, name: str, subnet: str, ips: list[str], **spec: Any) -> None:
    kube.create(IPPOOLS.path(), {"apiVersion": IPPOOLS.api_version, "kind": "IPPool", "metadata": {"name": name},
                                 "spec": {"subnet": subnet, "ips": ips, **spec}})


def make_pod(kube: Kube, cluster: KubeView, namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
    """A pod as the API server admits it, once the view's watch has it."""
    body = {"metadata": {"name": name, **metadata},
            "spec": {"containers": [{"name": "c", "image": "none"}], "terminationGracePeriodSeconds": 0}}
    made = kube.create(PODS.path(namespace=namespace), body)
    assert cluster.pods.wait_for(lambda pods: _uid(pods.get(f"{namespace}/{name}")) == made["metadata"]["uid"],
                                 timeout=WAIT)
    return made


def _uid(obj: Any) -> str | None:
    return None if obj is None else obj["metadata"]["uid"]


def add(service: Service, node: str, pod: dict[str, Any], *, cid: str | None = None) -> str:
    """The CNI ADD the node agent makes for `pod`; its address."""
    meta = pod["metadata"]
    request = PodRequest(cid or secrets.token_hex(8), "eth0", meta["namespace"], meta["name"], Mode.MACVLAN,
                         uid=meta["uid"])
    return service.allocate_and_place(node, request).pod.ip


def events(kube: Kube, cluster: KubeView, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """The controller's Events about a pod (the scheduler's are there too)."""
    cluster.events.wait_idle()
    found = kube.get(EVENTS.path(namespace=namespace), query={"fieldSelector": f"involvedObject.name={name}"})
    return [(e["type"], e["reason"], e["message"]) for e in found["items"] if e["source"].get("component") == COMPONENT]


# -- fixed addresses ----------------------------------------------------------------------------------


def test_a_fixed_address_is_honoured_and_a_second_pod_is_refused_naming_the_holder_with_an_event(
    kube_clean: Kube, k8s_namespace: str, cluster: KubeView, controller: tuple[Service, Pools], node: str
) -> None:
    service, pools = controller
    ippool(kube_clean, "lan", "198.18.0.0/24", ["198.18.0.100-198.18.0.199"], gateway="198.18.0.1", default=True)
    pools.wait("lan")
    ns = k8s_namespace
    db = make_pod(kube_clean, cluster, ns, "db-1", annotations={"underlay.io/ip": "198.18.0.140"})
    web = make_pod(kube_clean, cluster, ns, "web-0", annotations={"cni.projectcalico.org/ipAddrs": '["198.18.0.140"]'})
    assert add(service, node, db) == "198.18.0.140"
    with pytest.raises(AddressInUse, match=f"pod {ns}/web-0: 198.18.0.140 is held by {ns}/db-1"):
        add(service, node, web)
    assert events(kube_clean, cluster, ns, "web-0") == [
        ("Warning", "AddressInUse", f"pod {ns}/web-0: 198.18.0.140 is held by {ns}/db-1")]
    assert events(kube_clean, cluster, ns, "db-1") == []


# -- pool selection -----------------------------------------------------------------------------------


def test_pool_selection_by_namespace_node_and_pod_selectors_and_precedence(
    k8s: Any, kube_clean: Kube, k8s_namespace: str, cluster: KubeView, controller: tuple[Service, Pools], node: str
) -> None:
    service, pools = controller
    kube = kube_clean
    team = f"team-{secrets.token_hex(2)}"
    kube.patch(NAMESPACES.path(name=k8s_namespace), {"metadata": {"labels": {"team": team}}})
    ippool(kube, "everyone", "198.18.0.0/24", ["198.18.0.100-198.18.0.109"], default=True)
    ippool(kube, "team", "198.18.1.0/24", ["198.18.1.10-198.18.1.19"],
           namespaceSelector={"matchLabels": {"team": team}})
    ippool(kube, "racked", "198.18.2.0/24", ["198.18.2.10-198.18.2.19"],
           nodeSelector={"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]})
    ippool(kube, "gpus", "198.18.3.0/24", ["198.18.3.10-198.18.3.19"], nodes=["some-other-node"])
    ippool(kube, "small", "198.18.4.0/24", ["198.18.4.10-198.18.4.19"],
           podSelector={"matchExpressions": [{"key": "size", "operator": "In", "values": ["small"]}]})
    pools.wait("everyone", "team", "racked", "gpus", "small")
    ns = k8s_namespace

    def address(name: str, **metadata: Any) -> str:
        return add(service, node, make_pod(kube, cluster, ns, name, **metadata))

    assert address("plain").startswith("198.18.0.")  # pool default
    kube.patch(NAMESPACES.path(name=ns), {"metadata": {"annotations": {"underlay.io/default-ippool": "team"}}})
    assert cluster.namespaces.wait_for(
        lambda found: (found.get(ns) or {}).get("metadata", {}).get("annotations", {}).get("underlay.io/default-ippool"),
        timeout=WAIT)
    assert address("by-namespace").startswith("198.18.1.")  # namespace default, its selector matches
    assert address("by-node", annotations={"underlay.io/ippool": "racked"}).startswith("198.18.2.")  # pod over namespace
    assert address("by-label", labels={"size": "small"},
                   annotations={"ipam.spidernet.io/ippool": '{"ipv4": ["small"]}'}).startswith("198.18.4.")
    refused = make_pod(kube, cluster, ns, "refused", annotations={"underlay.io/ippool": '[{"interface": "eth0", "pool": "gpus"}]'})
    why = f"pod {ns}/refused: no pool matches (asked by annotation underlay.io/ippool): " \
          f"gpus: node {node} is not in nodes [some-other-node]"
    with pytest.raises(NoPoolMatches, match=re.escape(why)):
        add(service, node, refused)
    assert events(kube, cluster, ns, "refused") == [("Warning", "NoPoolMatches", why)]
    small_refused = make_pod(kube, cluster, ns, "too-big", annotations={"underlay.io/ippool": "small"})
    with pytest.raises(NoPoolMatches, match="small: pod does not match podSelector"):
        add(service, node, small_refused)


# -- StatefulSets, made by the real StatefulSet controller ----------------------------------------


def statefulset(kube: Kube, namespace: str, name: str, *, replicas: int, annotations: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return kube.create(STATEFULSETS.path(namespace=namespace), {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations},
                              "spec": {"containers": [{"name": "c", "image": "none"}],
                                       "terminationGracePeriodSeconds": 0}}},
    })  # fmt: skip


def scheduled(cluster: KubeView, namespace: str, name: str, *, not_uid: str | None = None) -> dict[str, Any]:
    """The pod once the scheduler bound it (what kubelet waits for before the CNI ADD)."""
    key = f"{namespace}/{name}"

    def ready(pods: Any) -> bool:
        pod = pods.get(key)
        return pod is not None and pod["spec"].get("nodeName") and pod["metadata"]["uid"] != not_uid

    assert cluster.pods.wait_for(ready, timeout=WAIT), f"pod {key} not scheduled"
    pod = cluster.pod(namespace, name)
    assert pod is not None
    return pod


def test_a_statefulset_keeps_its_addresses_across_pod_deletion_and_loses_them_on_scale_down(
    kube_clean: Kube, k8s_namespace: str, cluster: KubeView, controller: tuple[Service, Pools], node: str
) -> None:
    service, pools = controller
    kube, ns = kube_clean, k8s_namespace
    ippool(kube, "lan", "198.18.0.0/24", ["198.18.0.100-198.18.0.199"], default=True)
    ippool(kube, "db", "198.18.1.0/24", ["198.18.1.10-198.18.1.19"], namespaces=[ns])
    pools.wait("lan", "db")
    sts = statefulset(kube, ns, "db", replicas=2, annotations={"underlay.io/ippool": "db"})
    sts_uid = sts["metadata"]["uid"]
    first = {n: scheduled(cluster, ns, f"db-{n}") for n in (0, 1)}
    cids = {n: secrets.token_hex(8) for n in (0, 1)}
    ips = {n: add(service, node, first[n], cid=cids[n]) for n in (0, 1)}
    assert all(ip.startswith("198.18.1.") for ip in ips.values())
    assert service.reservations() == {f"{ns}/db-{n}@{sts_uid}": ips[n] for n in (0, 1)}

    # delete db-1: the StatefulSet controller makes a new pod (new UID) under the same name
    kube.delete(PODS.path(namespace=ns, name="db-1"))
    service.release(node, cids[1], "eth0")  # kubelet's DEL of the old sandbox
    other = add(service, node, make_pod(kube, cluster, ns, "squatter", annotations={"underlay.io/ippool": "db"}))
    assert other not in ips.values()  # the address waits for its StatefulSet pod
    again = scheduled(cluster, ns, "db-1", not_uid=first[1]["metadata"]["uid"])
    assert add(service, node, again) == ips[1]

    # scale down to 1: db-1 goes for good, its reservation ends once two passes saw it
    kube.patch(STATEFULSETS.path(namespace=ns, name="db"), {"spec": {"replicas": 1}})
    assert cluster.pods.wait_for(lambda pods: f"{ns}/db-1" not in pods, timeout=WAIT)
    assert cluster.statefulsets.wait_for(lambda found: found[f"{ns}/db"]["spec"]["replicas"] == 1, timeout=WAIT)
    collector = LeakCollector(service, cluster, now=time.time, grace=0)
    first_pass, second_pass = collector.run_pass(), collector.run_pass()
    assert [pod.name for pod, _ in second_pass.released] == ["db-1"]  # the leaked allocation: no DEL came
    assert first_pass.forgotten == ()
    assert second_pass.forgotten == ((f"{ns}/db-1@{sts_uid}",
                                      f"StatefulSet {ns}/db keeps ordinals 0 (replicas: 1): ordinal 1 is gone"),)
    assert service.reservations() == {f"{ns}/db-0@{sts_uid}": ips[0]}
    taker = make_pod(kube, cluster, ns, "taker", annotations={"underlay.io/ip": ips[1]})
    assert add(service, node, taker) == ips[1]


# -- the leak collector -------------------------------------------------------------------------------


def unreachable(kubeconfig: Path, tmp_path: Path) -> Kube:
    """A client of the same cluster whose server is a closed port: every request fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "unreachable.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return Kube.connect(kubeconfig=str(path))


def test_the_collector_releases_a_leaked_address_and_keeps_a_live_one_when_the_api_fails(
    k8s: Any, tmp_path: Path, kube_clean: Kube, k8s_namespace: str, cluster: KubeView,
    controller: tuple[Service, Pools], node: str
) -> None:
    service, pools = controller
    kube, ns = kube_clean, k8s_namespace
    ippool(kube, "lan", "198.18.0.0/24", ["198.18.0.100-198.18.0.199"], default=True)
    pools.wait("lan")
    leaked = add(service, node, make_pod(kube, cluster, ns, "leaked"))
    alive = add(service, node, make_pod(kube, cluster, ns, "alive"))
    kube.delete(PODS.path(namespace=ns, name="leaked"))  # its node is gone: no DEL will come
    assert cluster.pods.wait_for(lambda pods: f"{ns}/leaked" not in pods, timeout=WAIT)

    collector = LeakCollector(service, cluster, now=time.time, grace=0)
    assert collector.run_pass().suspects == 1  # marked from the cache
    down = KubeView(unreachable(k8s.kubeconfig, tmp_path))  # the API server cannot be reached
    collector.cluster = down
    outage = collector.run_pass()
    assert outage.released == () and [pod.ip for pod, _ in outage.kept] == [leaked]
    assert "kubernetes: GET" in outage.kept[0][1]
    assert {pod.ip for pod in service.allocations()} == {leaked, alive}

    collector.cluster = cluster  # the API answers again: the live read confirms
    report = collector.run_pass()
    assert [(pod.ip, reason) for pod, reason in report.released] == [(leaked, f"pod {ns}/leaked is gone")]
    assert {pod.ip for pod in service.allocations()} == {alive}
    assert collector.run_pass().released == () and collector.run_pass().released == ()  # the live one stays
    if isinstance(service.store, KubeStore):  # the finding is on the address's object, and whose it was
        found = kube.get(IPALLOCATIONS.path(name=leaked))
        assert (found["status"]["phase"], found["status"]["reason"]) == ("Cooldown", f"pod {ns}/leaked is gone")
        bound = kube.get(IPALLOCATIONS.path(name=alive))
        assert bound["spec"]["pod"] == {"namespace": ns, "name": "alive", "uid": _uid(cluster.pod(ns, "alive"))}
