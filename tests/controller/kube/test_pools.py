"""IPPool objects: their translation and judgement (pure), then live on the real API server: pools
added, edited and removed under a running service, overlap refused, status batched and correct."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.config import PoolConfig, Route
from controller.errors import ControllerError
from controller.kube.client import IPPOOLS, Kube
from controller.kube.reflector import Reflector
from controller.kube.pools import PoolManager, PoolObject, Verdict, judge, read_pool, status_of, usable
from controller.kube.store import KubeStore
from controller.selectors import Subject, pool_rules
from controller.service import PodRequest, Service
from controller.store import Mode
from ctlfakes import Clock, RecordingFabric, make_config
from kubeenv import ensure_node

WAIT = 10.0


def ippool(name: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created, "generation": 3}, "spec": spec}


# -- pure --------------------------------------------------------------------------------------------


def test_an_ippool_becomes_the_ipams_pool() -> None:
    pool = read_pool(ippool("web", subnet="198.18.8.0/24", ips=["198.18.8.10-198.18.8.20", "198.18.8.30"],
                            excludeIPs=["198.18.8.15"], gateway="198.18.8.1",
                            routes=[{"dst": "0.0.0.0/0", "gw": "198.18.8.1"}], default=True, reuseCooldownSeconds=5))  # fmt: skip
    assert pool.config == PoolConfig(
        name="web", subnet="198.18.8.0/24", ranges=(("198.18.8.10", "198.18.8.20"), ("198.18.8.30", "198.18.8.30")),
        gateway="198.18.8.1", routes=(Route("0.0.0.0/0", "198.18.8.1"),), exclude=("198.18.8.15/32",), default=True,
        cooldown=5.0,
    )  # fmt: skip
    assert (pool.generation, pool.error) == (3, None)
    assert read_pool(ippool("all", subnet="198.18.9.0/30")).config.ranges == (("198.18.9.0", "198.18.9.3"),)  # type: ignore[union-attr]
    assert read_pool(ippool("off", subnet="198.18.9.0/30", default=True, disabled=True)).config.default is False  # type: ignore[union-attr]


def test_an_ippool_s_selectors_become_the_pool_s_rules() -> None:
    pool = read_pool(ippool("db", subnet="198.18.8.0/24", namespaces=["db"], podSelector={"matchLabels": {"app": "db"}},
                            nodeSelector={"matchExpressions": [{"key": "rack", "operator": "Exists"}]}, disabled=True))
    assert pool.config is not None
    assert pool.config.rules == pool_rules({"namespaces": ["db"], "podSelector": {"matchLabels": {"app": "db"}},
                                            "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Exists"}]},
                                            "disabled": True})
    assert pool.config.rules.refusal(Subject("db", "n1", pod_labels={"app": "db"})) == "disabled"


@pytest.mark.parametrize(("spec", "message"), [
    ({"subnet": "198.18.8.0/24", "podSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}},
     "ippool p: spec.podSelector.matchExpressions[0].operator: 'Has' is not one of In, NotIn, Exists, DoesNotExist"),
    ({"subnet": "198.18.8.0/24", "ips": ["198.18.9.1-198.18.9.5"]}, "ippool p: spec.ips: '198.18.9.1-198.18.9.5' is not inside 198.18.8.0/24"),
    ({"subnet": "198.18.8.1/24"}, "ippool p: spec.subnet: '198.18.8.1/24' has host bits set (did you mean 198.18.8.0/24?)"),
    ({"subnet": "198.18.8.0/24", "gateway": "198.18.9.1"}, "ippool p: spec.gateway: 198.18.9.1 is not a host address of 198.18.8.0/24"),
    ({"subnet": "198.18.8.0/24", "excludeIPs": ["nope"]}, "ippool p: spec.excludeIPs[0]: 'nope' is not an address"),
    ({"subnet": "198.18.8.0/24", "reuseCooldownSeconds": -1}, "ippool p: spec.reuseCooldownSeconds: -1 is not a number"),
])  # fmt: skip
def test_an_ippool_the_ipam_cannot_use_says_why(spec: dict[str, Any], message: str) -> None:
    pool = read_pool(ippool("p", **spec))
    assert pool.config is None
    assert pool.error is not None and pool.error.startswith(message)


def test_of_overlapping_pools_the_older_serves() -> None:
    pools = [read_pool(ippool("young", "2026-01-02T00:00:00Z", subnet="198.18.8.0/24", ips=["198.18.8.50-198.18.8.99"])),
             read_pool(ippool("old", "2026-01-01T00:00:00Z", subnet="198.18.8.0/24", ips=["198.18.8.90-198.18.8.120"])),
             read_pool(ippool("apart", "2026-01-03T00:00:00Z", subnet="198.18.9.0/24")),
             read_pool(ippool("off", "2026-01-04T00:00:00Z", subnet="198.18.10.0/24", disabled=True)),
             read_pool(ippool("bad", subnet="198.18.8.0/33"))]  # fmt: skip
    verdicts = judge(pools)
    assert verdicts["old"] == Verdict(True, "Ready")
    assert verdicts["young"] == Verdict(False, "OverlapsPool", "its addresses overlap pool old (198.18.8.90-198.18.8.99); it serves none until fixed")
    assert verdicts["apart"].ready and verdicts["off"] == Verdict(False, "Disabled", "spec.disabled is true")
    assert verdicts["bad"].reason == "InvalidSpec"
    assert [p.name for p in usable(pools, verdicts)] == ["apart", "off", "old"]  # disabled: kept for its holders


def test_status_counts_and_keeps_the_transition_time_while_the_condition_holds() -> None:
    pool = read_pool(ippool("p", subnet="198.18.8.0/29", gateway="198.18.8.1"))
    status = status_of(pool, Verdict(True, "Ready"), {"Bound": 2, "Reserved": 1, "Cooldown": 1}, now=1000.0)
    assert status == {"total": 5, "allocated": 3, "cooldown": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "observedGeneration": 3,
         "lastTransitionTime": "1970-01-01T00:16:40Z"}]}  # fmt: skip
    served = PoolObject(pool.name, pool.created, 4, pool.config, status=status)
    assert status_of(served, Verdict(True, "Ready"), {}, now=2000.0)["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:16:40Z"
    assert status_of(served, Verdict(False, "Disabled"), {}, now=2000.0)["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:33:20Z"


# -- live ----------------------------------------------------------------------------------------------


def create_pool(kube: Kube, name: str, **spec: Any) -> dict[str, Any]:
    return kube.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool",
                                        "metadata": {"name": name}, "spec": spec})  # fmt: skip


def edit_pool(kube: Kube, name: str, **spec: Any) -> None:
    kube.patch(IPPOOLS.path(name=name), {"spec": spec})


@pytest.fixture
def pools(kube_clean: Kube) -> Iterator[PoolManager]:
    manager = PoolManager(kube_clean, interval=1.0).start()
    assert manager.wait_synced(WAIT)
    yield manager
    manager.stop()


def status_of_pool(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(IPPOOLS.path(name=name)).get("status") or {}


def wait_status(kube: Kube, name: str, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The pool's status once `predicate` holds (watched, not polled)."""
    watcher = Reflector(kube, IPPOOLS, transform=read_pool, query={"fieldSelector": f"metadata.name={name}"}).start()
    try:
        if not watcher.wait_for(lambda items: name in items and predicate(dict(items[name].status)), timeout=WAIT):
            pytest.fail(f"ippool {name}: status never matched; last {status_of_pool(kube, name)}")
    finally:
        watcher.stop()
    return status_of_pool(kube, name)


@pytest.fixture
def service(kube_clean: Kube, pools: PoolManager, clock: Clock) -> Iterator[Service]:
    ensure_node(kube_clean, "n2")
    store = KubeStore(kube_clean, now=clock, cooldown=30)
    service = Service(store, make_config(pools={}), now=clock, fabric=RecordingFabric())
    pools.bind(service.set_pools)
    service.register_node("n2", mac="02:00:00:00:01:02", ip="198.18.0.12")  # pinned: switch 1 port 3
    yield service
    store.close()


def place(service: Service, cid: str, **fields: Any) -> str:
    return service.allocate_and_place("n2", PodRequest(cid, "eth0", "default", cid, Mode.MACVLAN, **fields)).pod.ip


def wait_pools(pools: PoolManager, predicate: Callable[[dict[str, PoolConfig]], bool]) -> None:
    assert pools.pools.wait_for(lambda _: predicate({c.name: c for c in pools.configs()}), timeout=WAIT), pools.configs()


def test_pools_added_edited_and_removed_under_a_running_service(kube_clean: Kube, pools: PoolManager, service: Service) -> None:
    with pytest.raises(ControllerError, match="no default pool"):
        place(service, "a")
    create_pool(kube_clean, "web", subnet="198.18.8.0/24", ips=["198.18.8.10-198.18.8.11"], gateway="198.18.8.1", default=True)
    wait_pools(pools, lambda found: "web" in found)
    assert [place(service, "a"), place(service, "b")] == ["198.18.8.10", "198.18.8.11"]
    with pytest.raises(ControllerError, match="exhausted"):
        place(service, "c")
    edit_pool(kube_clean, "web", ips=["198.18.8.11-198.18.8.12"])  # shrinks past a held address, grows
    wait_pools(pools, lambda found: found["web"].ranges == (("198.18.8.11", "198.18.8.12"),))
    assert place(service, "c") == "198.18.8.12"
    held = {p.container_id: p.ip for p in service.list_pods("n2")}
    assert held == {"a": "198.18.8.10", "b": "198.18.8.11", "c": "198.18.8.12"}  # a keeps what it has
    attachment = service.allocate_and_place("n2", PodRequest("a", "eth0", "default", "a", Mode.MACVLAN))
    assert (attachment.prefix, attachment.gateway) == (24, "198.18.8.1")
    kube_clean.delete(IPPOOLS.path(name="web"))
    wait_pools(pools, lambda found: not found)
    with pytest.raises(ControllerError, match="no default pool"):
        place(service, "d")
    assert len(service.list_pods("n2")) == 3


def test_an_overlapping_pool_serves_nothing_and_says_which_it_overlaps(kube_clean: Kube, pools: PoolManager, service: Service) -> None:
    create_pool(kube_clean, "first", subnet="198.18.8.0/24", ips=["198.18.8.10-198.18.8.20"], default=True)
    wait_pools(pools, lambda found: "first" in found)
    create_pool(kube_clean, "second", subnet="198.18.8.0/24", ips=["198.18.8.20-198.18.8.30"])
    status = wait_status(kube_clean, "second", lambda s: bool(s.get("conditions")))
    assert status["conditions"][0] | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "False", "reason": "OverlapsPool", "observedGeneration": 1, "lastTransitionTime": None,
        "message": "its addresses overlap pool first (198.18.8.20); it serves none until fixed"}  # fmt: skip
    with pytest.raises(ControllerError, match="no pool named 'second'"):
        place(service, "a", pool="second")
    edit_pool(kube_clean, "second", ips=["198.18.8.21-198.18.8.30"])
    wait_pools(pools, lambda found: "second" in found)
    assert place(service, "a", pool="second") == "198.18.8.21"
    assert wait_status(kube_clean, "second", lambda s: s.get("allocated") == 1)["conditions"][0]["reason"] == "Ready"


def test_status_is_batched_and_counts_what_the_api_holds(kube_clean: Kube, pools: PoolManager, service: Service, clock: Clock) -> None:
    create_pool(kube_clean, "web", subnet="198.18.8.0/24", gateway="198.18.8.1", default=True)
    wait_status(kube_clean, "web", lambda s: s.get("total") == 253)
    written = pools.writes
    for i in range(40):
        place(service, f"c{i}")
    for i in range(10):
        service.release("n2", f"c{i}", "eth0")
    status = wait_status(kube_clean, "web", lambda s: (s.get("allocated"), s.get("cooldown")) == (30, 10))
    assert status["total"] == 253
    assert pools.writes - written <= 4  # 50 changes in a few seconds: a write a second at most, not one each
