"""The service with a cluster view: intent decides the pool, address and MAC; failures are Events.

A real SQLite store, the recording fabric and `DictCluster` (our own ClusterView protocol over
dicts); the same rules on a real API server are in tests/controller/test_intent_apiserver.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from controller.config import PoolConfig
from controller.errors import (AddressInUse, ConflictError, Contradiction, NoPoolMatches, PoolCoolingDown,
                               PoolExhausted, TemporaryError)
from controller.leaks import LeakCollector
from controller.main import start_leak_collector
from controller.selectors import pool_rules
from controller.service import PodRequest, Service

from ctlfakes import Clock, DictCluster, make_config, pod_request

N1_MAC = "02:00:00:00:01:01"
STS_UID = "5f0c7a4e-0000-4000-8000-0000000000aa"


def pools() -> dict[str, PoolConfig]:
    return {
        "web": PoolConfig("web", "198.18.0.0/24", (("198.18.0.100", "198.18.0.199"),), gateway="198.18.0.1",
                          default=True),
        "db": PoolConfig("db", "198.18.1.0/24", (("198.18.1.40", "198.18.1.49"),), gateway="198.18.1.1",
                         rules=pool_rules({"namespaces": ["default", "db"]})),
        "tiny": PoolConfig("tiny", "198.18.2.0/24", (("198.18.2.10", "198.18.2.10"),),
                           rules=pool_rules({"podSelector": {"matchLabels": {"size": "tiny"}}})),
        "gpu": PoolConfig("gpu", "198.18.3.0/24", (("198.18.3.10", "198.18.3.19"),),
                          rules=pool_rules({"nodeSelector": {"matchLabels": {"gpu": "yes"}}})),
    }


@pytest.fixture
def view() -> DictCluster:
    cluster = DictCluster()
    cluster.namespaces["default"] = {"metadata": {"name": "default", "labels": {}}}
    cluster.nodes["n1"] = {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}
    return cluster


@pytest.fixture
def svc(make_service: Callable[..., Service], view: DictCluster) -> Service:
    service = make_service(replace(make_config(), pools=pools()), cluster=view)
    service.register_node("n1", mac=N1_MAC, ip="198.18.5.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    return service


def add(service: Service, view: DictCluster, name: str, *, cid: str | None = None, namespace: str = "default",
        **fields: object) -> PodRequest:
    """The request the agent makes for pod `name` as the cluster has it (its UID, when it exists)."""
    pod = view.pods.get((namespace, name))
    fields.setdefault("uid", None if pod is None else pod["metadata"]["uid"])
    return pod_request(cid or f"c-{name}", namespace=namespace, name=name, **fields)


def place(service: Service, view: DictCluster, name: str, **fields: object) -> str:
    return service.allocate_and_place("n1", add(service, view, name, **fields)).pod.ip


# -- fixed addresses and their refusals ---------------------------------------------------------------


def test_a_fixed_address_is_honoured_and_a_second_pod_asking_is_told_who_holds_it(svc: Service, view: DictCluster) -> None:
    view.add_pod("db-1", annotations={"underlay.io/ip": "198.18.1.40"})
    view.add_pod("web-0", annotations={"ovn.kubernetes.io/ip_address": "198.18.1.40"})
    assert place(svc, view, "db-1") == "198.18.1.40"
    with pytest.raises(AddressInUse, match="pod default/web-0: 198.18.1.40 is held by default/db-1"):
        place(svc, view, "web-0")
    assert view.events == [("default/web-0", "Warning", "AddressInUse",
                            "pod default/web-0: 198.18.1.40 is held by default/db-1")]


def test_the_cni_request_s_address_still_works_and_must_agree_with_the_annotation(svc: Service, view: DictCluster) -> None:
    view.add_pod("a")
    assert place(svc, view, "a", ip="198.18.0.150") == "198.18.0.150"
    view.add_pod("b", annotations={"underlay.io/ip": "198.18.0.151"})
    with pytest.raises(Contradiction, match="annotation underlay.io/ip says 198.18.0.151, the CNI request's ip"):
        place(svc, view, "b", ip="198.18.0.152")
    assert [e[2] for e in view.events] == ["ConflictingAddressIntent"]
    assert svc.list_pods("n1")[0].ip == "198.18.0.150"  # nothing else was allocated


def test_the_annotated_mac(svc: Service, view: DictCluster) -> None:
    view.add_pod("a", annotations={"underlay.io/mac": "0A:00:00:00:00:01"})
    assert svc.allocate_and_place("n1", add(svc, view, "a")).pod.mac == "0a:00:00:00:00:01"


# -- pool selection and precedence --------------------------------------------------------------------


def test_precedence_pod_over_namespace_over_network_config_over_pool_default(svc: Service, view: DictCluster) -> None:
    view.namespaces["db"] = {"metadata": {"name": "db", "annotations": {"underlay.io/default-ippool": "db"}}}
    view.add_pod("plain")
    view.add_pod("in-db", namespace="db")
    view.add_pod("in-db-asking-web", namespace="db", annotations={"underlay.io/ippool": "web"})
    view.add_pod("net")
    assert place(svc, view, "plain").startswith("198.18.0.")  # the default pool
    assert place(svc, view, "in-db", namespace="db").startswith("198.18.1.")  # namespace default
    assert place(svc, view, "in-db-asking-web", namespace="db").startswith("198.18.0.")  # the pod's own
    assert place(svc, view, "net", pool="db").startswith("198.18.1.")  # the network config's, over the default
    assert place(svc, view, "in-db", namespace="db", cid="again", pool="web").startswith("198.18.1.")


def test_pool_selection_by_node_and_pod_selectors_and_no_match_explained(svc: Service, view: DictCluster) -> None:
    view.add_pod("big", annotations={"underlay.io/ippool": "tiny"})
    with pytest.raises(NoPoolMatches, match=r"tiny: pod does not match podSelector \(wants size In \(tiny\), has no label size\)"):
        place(svc, view, "big")
    view.add_pod("small", labels={"size": "tiny"}, annotations={"underlay.io/ippool": "tiny"})
    assert place(svc, view, "small") == "198.18.2.10"
    view.add_pod("trainer", annotations={"underlay.io/ippool": "gpu"})
    with pytest.raises(NoPoolMatches, match="gpu: node n1 does not match nodeSelector"):
        place(svc, view, "trainer")
    view.nodes["n1"]["metadata"]["labels"]["gpu"] = "yes"
    assert place(svc, view, "trainer").startswith("198.18.3.")
    assert [e[:3] for e in view.events] == [("default/big", "Warning", "NoPoolMatches"),
                                           ("default/trainer", "Warning", "NoPoolMatches")]


def test_a_full_pool_moves_on_to_the_next_one_named_then_tells_the_pod(svc: Service, view: DictCluster) -> None:
    spider = '{"ipv4": ["tiny", "web"]}'
    for name in ("s1", "s2"):
        view.add_pod(name, labels={"size": "tiny"}, annotations={"ipam.spidernet.io/ippool": spider})
    assert place(svc, view, "s1") == "198.18.2.10"
    assert place(svc, view, "s2").startswith("198.18.0.")
    view.add_pod("s3", labels={"size": "tiny"}, annotations={"underlay.io/ippool": "tiny"})
    with pytest.raises(PoolExhausted, match="pod default/s3: pool tiny: exhausted"):
        place(svc, view, "s3")
    assert view.events[-1][2] == "PoolExhausted"


def test_a_pool_cooling_down_counts_as_full_and_the_pod_is_told_when_to_expect_room(svc: Service, view: DictCluster) -> None:
    for name, pools_ in (("first", '["tiny"]'), ("only-tiny", '["tiny"]'), ("either", '["tiny", "web"]')):
        view.add_pod(name, labels={"size": "tiny"}, annotations={"ipam.spidernet.io/ippool": f'{{"ipv4": {pools_}}}'})
    assert place(svc, view, "first", cid="c1") == "198.18.2.10"
    svc.release("n1", "c1", "eth0")
    with pytest.raises(PoolCoolingDown, match=r"pod default/only-tiny: pool tiny: every free address is cooling down .* retry in 30s") as cooling:
        place(svc, view, "only-tiny")
    assert cooling.value.delay == 30
    assert place(svc, view, "either").startswith("198.18.0.")
    assert [e[1:3] for e in view.events] == [("Warning", "PoolCoolingDown")]


def test_an_unknown_pod_without_uid_gets_the_defaults_and_a_deleted_uid_is_refused(svc: Service, view: DictCluster) -> None:
    assert place(svc, view, "not-in-the-api").startswith("198.18.0.")
    view.add_pod("gone", uid="new")
    with pytest.raises(ConflictError, match="pod default/gone: uid old is not in the Kubernetes API .*uid new"):
        place(svc, view, "gone", uid="old")
    view.cache[("default", "late")] = None  # the watch has not delivered it yet: one live read finds it
    view.add_pod("late", annotations={"underlay.io/ip": "198.18.0.190"})
    assert place(svc, view, "late") == "198.18.0.190"


def test_adding_again_is_answered_as_allocated_whatever_changed_since(svc: Service, view: DictCluster) -> None:
    view.add_pod("a", annotations={"underlay.io/ippool": "db"})
    first = place(svc, view, "a")
    view.pods[("default", "a")]["metadata"]["annotations"]["underlay.io/ippool"] = "gone"
    assert place(svc, view, "a") == first  # the runtime retried the same ADD
    view.down = True
    assert place(svc, view, "a") == first
    assert view.events == []


def test_an_api_outage_is_a_temporary_error_without_event(svc: Service, view: DictCluster) -> None:
    view.add_pod("a")
    view.down = True
    with pytest.raises(TemporaryError, match="not reachable"):
        place(svc, view, "a")
    assert view.events == []


def test_a_batch_resolves_each_pod_and_tells_only_the_ones_refused(svc: Service, view: DictCluster) -> None:
    view.add_pod("ok", annotations={"underlay.io/ip": "198.18.0.120"})
    view.add_pod("bad", annotations={"underlay.io/ip": "not-an-ip"})
    answers = svc.place_pods("n1", [add(svc, view, "ok"), add(svc, view, "bad")])
    assert answers[0].pod.ip == "198.18.0.120"  # type: ignore[union-attr]
    assert "annotation underlay.io/ip: 'not-an-ip' is not an IPv4 or IPv6 address" in str(answers[1])
    assert [e[:3] for e in view.events] == [("default/bad", "Warning", "InvalidAddressIntent")]


# -- StatefulSet pods ---------------------------------------------------------------------------------


def sts_pod(view: DictCluster, ordinal: int, *, uid: str = STS_UID, pod_uid: str | None = None) -> None:
    view.add_pod(f"db-{ordinal}", uid=pod_uid, owner={"kind": "StatefulSet", "name": "db", "uid": uid})


def test_a_statefulset_pod_keeps_its_address_by_its_identity_not_its_uid(svc: Service, view: DictCluster) -> None:
    view.add_statefulset("db", replicas=3, uid=STS_UID)
    sts_pod(view, 1, pod_uid="first")
    first = svc.allocate_and_place("n1", add(svc, view, "db-1", cid="c1")).pod
    assert first.sticky == f"default/db-1@{STS_UID}"
    view.add_pod("other")
    place(svc, view, "other")
    svc.release("n1", "c1", "eth0")
    sts_pod(view, 1, pod_uid="second")  # the StatefulSet controller's replacement
    assert place(svc, view, "db-1", cid="c2") == first.ip


def test_the_workload_s_ip_list_gives_each_ordinal_its_address(svc: Service, view: DictCluster) -> None:
    view.add_statefulset("db", replicas=2, uid=STS_UID,
                         annotations={"underlay.io/ip-list": "198.18.1.45,198.18.1.44"})
    sts_pod(view, 0)
    sts_pod(view, 1)
    assert [place(svc, view, "db-0"), place(svc, view, "db-1")] == ["198.18.1.45", "198.18.1.44"]


def test_another_incarnation_s_annotations_are_not_the_pod_s(svc: Service, view: DictCluster) -> None:
    view.add_statefulset("db", replicas=1, uid="lagging", annotations={"underlay.io/ip-list": "198.18.1.45"})
    sts_pod(view, 0)  # owned by STS_UID: the cache still has the StatefulSet it replaced
    assert place(svc, view, "db-0").startswith("198.18.0.")


def test_a_re_created_statefulset_takes_over_its_namesake_s_listed_address(svc: Service, view: DictCluster) -> None:
    listed = {"underlay.io/ip-list": '["198.18.1.41"]'}
    view.add_statefulset("db", replicas=1, uid="old", annotations=listed)
    sts_pod(view, 0, uid="old")
    place(svc, view, "db-0", cid="c-old")
    svc.release("n1", "c-old", "eth0")
    view.add_statefulset("db", replicas=1, uid="new", annotations=listed)  # deleted and created again
    sts_pod(view, 0, uid="new", pod_uid="p2")
    assert place(svc, view, "db-0", cid="c-new") == "198.18.1.41"
    assert svc.reservations() == {"default/db-0@new": "198.18.1.41"}


def test_a_statefulset_pod_does_not_take_another_pod_s_reservation(svc: Service, view: DictCluster) -> None:
    view.add_statefulset("db", replicas=1, uid=STS_UID)
    sts_pod(view, 0)
    ip = place(svc, view, "db-0", cid="c0")
    svc.release("n1", "c0", "eth0")
    view.add_pod("thief", annotations={"underlay.io/ip": ip})
    with pytest.raises(AddressInUse, match=f"{ip} is reserved for sticky key default/db-0@{STS_UID}"):
        place(svc, view, "thief")


# -- the leak collector ---------------------------------------------------------------------------------


@pytest.fixture
def collector(svc: Service, view: DictCluster, clock: Clock) -> LeakCollector:
    return LeakCollector(svc, view, now=clock, grace=60)


def test_a_leaked_address_is_released_on_the_second_pass_after_a_live_read(
    svc: Service, view: DictCluster, clock: Clock, collector: LeakCollector, caplog: pytest.LogCaptureFixture
) -> None:
    view.add_pod("gone")
    view.add_pod("alive")
    leaked, alive = place(svc, view, "gone"), place(svc, view, "alive")
    del view.pods[("default", "gone")]  # deleted while its node was down: no DEL ever comes
    assert collector.run_pass().suspects == 0  # younger than the grace period
    clock.advance(61)
    first = collector.run_pass()
    assert (first.released, first.suspects) == ((), 1)
    assert view.live_reads == 0
    with caplog.at_level(logging.INFO, logger="underlay.leaks"):
        second = collector.run_pass()
    assert [(pod.ip, reason) for pod, reason in second.released] == [(leaked, "pod default/gone is gone")]
    assert view.live_reads == 1
    assert [pod.ip for pod in svc.list_pods("n1")] == [alive]
    assert "leaked address released ip=198.18.0.100 pod=default/gone reason=\"pod default/gone is gone\"" in caplog.text


def test_a_stale_cache_alone_releases_nothing(svc: Service, view: DictCluster, clock: Clock, collector: LeakCollector) -> None:
    view.add_pod("a")
    place(svc, view, "a")
    view.cache[("default", "a")] = None  # the cache says gone, the API server disagrees
    clock.advance(61)
    collector.run_pass()
    assert collector.run_pass().released == ()
    assert len(svc.list_pods("n1")) == 1


def test_a_pod_re_created_under_its_name_is_another_pod(svc: Service, view: DictCluster, clock: Clock,
                                                       collector: LeakCollector) -> None:
    view.add_pod("a", uid="one")
    place(svc, view, "a")
    view.add_pod("a", uid="two")
    clock.advance(61)
    collector.run_pass()
    (released,) = collector.run_pass().released
    assert released[1] == "pod default/a is another pod now (uid two; the address was given to uid one)"


def test_an_api_error_keeps_the_address(svc: Service, view: DictCluster, clock: Clock, collector: LeakCollector) -> None:
    view.add_pod("a")
    place(svc, view, "a")
    del view.pods[("default", "a")]
    clock.advance(61)
    collector.run_pass()
    view.down = True
    report = collector.run_pass()
    assert report.released == () and [pod.name for pod, _ in report.kept] == ["a"]
    assert len(svc.list_pods("n1")) == 1
    view.down = False
    assert len(collector.run_pass().released) == 1  # still a suspect: confirmed once the API answers


def test_allocations_without_a_pod_uid_are_left_to_the_agents(svc: Service, view: DictCluster, clock: Clock,
                                                              collector: LeakCollector) -> None:
    place(svc, view, "not-in-the-api")
    clock.advance(61)
    collector.run_pass()
    assert collector.run_pass().released == ()


def test_a_statefulset_pod_s_address_stays_reserved_until_scale_down_is_seen_twice(
    svc: Service, view: DictCluster, clock: Clock, collector: LeakCollector
) -> None:
    view.add_statefulset("db", replicas=2, uid=STS_UID)
    sts_pod(view, 0)
    sts_pod(view, 1)
    ips = [place(svc, view, "db-0"), place(svc, view, "db-1")]
    del view.pods[("default", "db-1")]  # its node died: no DEL
    clock.advance(61)
    collector.run_pass()
    (released,) = collector.run_pass().released
    assert released[0].name == "db-1"
    assert svc.reservations() == {f"default/db-0@{STS_UID}": ips[0], f"default/db-1@{STS_UID}": ips[1]}
    view.statefulsets[("default", "db")]["spec"]["replicas"] = 1
    assert collector.run_pass().forgotten == ()
    forgotten = collector.run_pass().forgotten
    assert forgotten == ((f"default/db-1@{STS_UID}", "StatefulSet default/db keeps ordinals 0 (replicas: 1): ordinal 1 is gone"),)
    assert svc.reservations() == {f"default/db-0@{STS_UID}": ips[0]}


def test_the_controller_runs_the_collector_only_with_a_cluster(svc: Service, view: DictCluster,
                                                               make_service: Callable[..., Service]) -> None:
    stop = threading.Event()
    config = replace(make_config(), gc_interval=0.01, gc_grace=0.0)
    assert start_leak_collector(make_service(config), config, stop) is None
    view.add_pod("gone")
    place(svc, view, "gone")
    del view.pods[("default", "gone")]
    try:
        assert start_leak_collector(svc, config, stop) is not None
        deadline = time.monotonic() + 10
        while svc.allocations() and time.monotonic() < deadline:
            stop.wait(0.01)
        assert svc.allocations() == []
    finally:
        stop.set()
