"""Intent for dual stack (pure): IPv6 addresses and pairs in the annotations, the CNI request and a
StatefulSet's ip-list; pool choice by every address of a pair."""

from __future__ import annotations

from dataclasses import replace as with_fields
from typing import Any

import pytest
from test_intent import MEMBER, SUBJECT, WHO, obj, resolve, said
from test_service_intent import N1_MAC, STS_UID, add, sts_pod, view  # noqa: F401  (the DictCluster fixture)

from controller.config import parse
from ctlfakes import make_config
from controller.errors import Contradiction, NoPoolMatches
from controller.intent import Intent, Level, choose_pools
from controller.ipam import Pool

POOLS = [Pool.from_config(config) for config in parse({"store": "x", "pools": {
    "dual": {"subnet": "198.18.1.0/24", "subnet6": "fd00:1::/64", "default": True},
    "v4": {"subnet": "198.18.2.0/24"},
    "v6": {"subnet6": "fd00:2::/64"},
}}).pools.values()]


def choose(found: Intent) -> tuple[str, ...]:
    return choose_pools(found, subject=SUBJECT, pools=POOLS, who=WHO)


def test_a_pair_picks_the_pool_holding_both() -> None:
    assert choose(Intent(ip=said(Level.POD, "198.18.1.5,fd00:1::5"))) == ("dual",)
    assert choose(Intent(ip=said(Level.POD, "fd00:2::5"))) == ("v6",)
    assert choose(Intent(ip=said(Level.POD, "fd00:1::5"))) == ("dual",)


def test_a_pair_no_pool_holds_whole_matches_nothing() -> None:
    with pytest.raises(NoPoolMatches, match=r"198.18.2.5,fd00:1::5 \(x\) is in no pool's ranges"):
        choose(Intent(ip=said(Level.POD, "198.18.2.5,fd00:1::5")))


def test_a_pair_outside_the_named_pool_is_a_contradiction() -> None:
    with pytest.raises(Contradiction, match="198.18.1.5,fd00:2::5 .x. is not in pool v6"):
        choose(Intent(pools=said(Level.POD, ("v6",)), ip=said(Level.POD, "198.18.1.5,fd00:2::5")))


def test_the_cni_request_may_ask_for_both_families() -> None:
    found = resolve(obj(), ip="fd00:1::5,198.18.1.5")
    assert found.ip is not None and (found.ip.value, found.ip.source.level) == ("198.18.1.5,fd00:1::5", Level.POD)


def test_a_statefulset_ip_list_of_pairs_gives_pod_n_its_pair() -> None:
    for text in ('["198.18.1.40,fd00:1::40", "198.18.1.41,fd00:1::41", "198.18.1.42,fd00:1::42"]',
                 "198.18.1.40,fd00:1::40; 198.18.1.41,fd00:1::41; 198.18.1.42, fd00:1::42"):
        found = resolve(obj(), sts=obj("db", **{"underlay.io/ip-list": text}), member=MEMBER)
        assert found.ip is not None and found.ip.value == "198.18.1.42,fd00:1::42"


def test_a_pair_and_one_of_its_addresses_disagree() -> None:
    with pytest.raises(Contradiction, match="says 198.18.1.5,fd00:1::5, .* says 198.18.1.5"):
        resolve(obj(**{"underlay.io/ip": "198.18.1.5,fd00:1::5"}), ip="198.18.1.5")


# -- with the service (a real SQLite store, our DictCluster view) ------------------------------------


@pytest.fixture
def svc(make_service: Any, view: Any) -> Any:
    pools = parse({"store": "x", "pools": {
        "web": {"subnet": "198.18.0.0/24", "ranges": ["198.18.0.100-198.18.0.199"], "default": True},
        "dual": {"subnet": "198.18.1.0/24", "ranges": ["198.18.1.40-198.18.1.49"], "gateway": "198.18.1.1",
                 "subnet6": "fd00:1::/64", "ranges6": ["fd00:1::40-fd00:1::49"], "gateway6": "fd00:1::1"},
    }}).pools
    service = make_service(with_fields(make_config(), pools=pools), cluster=view)
    service.register_node("n1", mac=N1_MAC, ip="198.18.5.11")
    service.node_located(N1_MAC, dpid=1, port=4)
    return service


def test_a_pod_annotated_with_a_pair_gets_both(svc: Any, view: Any) -> None:
    view.add_pod("db-9", annotations={"underlay.io/ip": "fd00:1::0045,198.18.1.45"})
    pod = svc.allocate_and_place("n1", add(svc, view, "db-9")).pod
    assert (pod.pool, pod.ips) == ("dual", ("198.18.1.45", "fd00:1::45"))


def test_an_annotated_ipv6_address_picks_the_dual_pool_and_the_ipv4_one_is_allocated(svc: Any, view: Any) -> None:
    view.add_pod("db-9", annotations={"underlay.io/ip": "fd00:1::47"})
    assert svc.allocate_and_place("n1", add(svc, view, "db-9")).pod.ips == ("198.18.1.40", "fd00:1::47")


def test_the_cni_request_s_pair_goes_through_intent(svc: Any, view: Any) -> None:
    view.add_pod("db-9")
    pod = svc.allocate_and_place("n1", add(svc, view, "db-9", ips=("198.18.1.41", "fd00:1::41"))).pod
    assert pod.ips == ("198.18.1.41", "fd00:1::41")


def test_a_statefulset_pod_keeps_both_addresses_by_its_identity(svc: Any, view: Any) -> None:
    view.add_statefulset("db", replicas=3, uid=STS_UID, annotations={"underlay.io/ippool": "dual"})
    sts_pod(view, 1, pod_uid="first")
    first = svc.allocate_and_place("n1", add(svc, view, "db-1", cid="c1", pool="dual")).pod
    svc.release("n1", "c1", "eth0")
    sts_pod(view, 1, pod_uid="second")
    again = svc.allocate_and_place("n1", add(svc, view, "db-1", cid="c2", pool="dual")).pod
    assert again.ips == first.ips and len(first.ips) == 2
    assert svc.reservations() == {f"default/db-1@{STS_UID}": ",".join(first.ips)}
