"""Dual-stack IPPool objects: the IPv6 keys become the IPAM's, their errors name the IPPool's
keys, overlaps count IPv6, the status counts a /64 without overflowing; live, a dual-stack pool
added under a running service hands out both families."""

from __future__ import annotations

from test_pools import WAIT, create_pool, ippool, place, pools, service, wait_pools, wait_status  # noqa: F401

from controller.config import Family, Route
from controller.kube.client import IPALLOCATIONS, Kube
from controller.kube.pools import MAX_TOTAL, PoolManager, Verdict, judge, read_pool, status_of
from controller.service import PodRequest, Service
from controller.store import Mode


def test_a_dual_stack_ippool_becomes_the_ipams_pool() -> None:
    pool = read_pool(ippool("dual", subnet="198.18.8.0/24", gateway="198.18.8.1", subnet6="fd00:8::/64",
                            ips6=["fd00:8::10-fd00:8::20", "fd00:8::30"], gateway6="fd00:8::1",
                            excludeIPs=["fd00:8::15"], routes=[{"dst": "::/0", "gw": "fd00:8::1"}]))
    assert pool.error is None and pool.config is not None
    assert pool.config.families[1] == Family(6, "fd00:8::/64", (("fd00:8::10", "fd00:8::20"), ("fd00:8::30", "fd00:8::30")),
                                             "fd00:8::1")
    assert (pool.config.exclude, pool.config.routes) == (("fd00:8::15/128",), (Route("::/0", "fd00:8::1"),))
    only6 = read_pool(ippool("v6", subnet6="fd00:9::/64"))
    assert only6.config is not None and only6.config.subnet is None and len(only6.config.families) == 1


def test_errors_name_the_ippool_s_keys() -> None:
    pool = read_pool(ippool("p", subnet6="fd00:8::/64", ips6=["fd00:9::1-fd00:9::5"]))
    assert pool.error == "ippool p: spec.ips6: 'fd00:9::1-fd00:9::5' is not inside fd00:8::/64"
    assert read_pool(ippool("p")).error == "ippool p: spec.subnet: missing (a pool needs subnet, subnet6 or both)"


def test_ipv6_overlaps_count_and_a_slash_64_total_stays_an_int64() -> None:
    pools = [read_pool(ippool("old", "2026-01-01T00:00:00Z", subnet6="fd00:8::/64")),
             read_pool(ippool("young", "2026-01-02T00:00:00Z", subnet="198.18.8.0/24", subnet6="fd00:8::/120"))]
    verdicts = judge(pools)
    assert verdicts["young"] == Verdict(False, "OverlapsPool",
                                        "its addresses overlap pool old (fd00:8::1-fd00:8::ff); it serves none until fixed")
    assert status_of(pools[0], verdicts["old"], {}, now=0.0)["total"] == MAX_TOTAL == 2**63 - 1


def test_a_dual_stack_pool_added_under_a_running_service(kube_clean: Kube, pools: PoolManager, service: Service) -> None:
    create_pool(kube_clean, "dual", subnet="198.18.8.0/24", ips=["198.18.8.10-198.18.8.11"], gateway="198.18.8.1",
                subnet6="fd00:8::/64", ips6=["fd00:8::10-fd00:8::ffff:ffff"], gateway6="fd00:8::1", default=True)
    wait_pools(pools, lambda found: "dual" in found)
    pod = service.allocate_and_place("n2", PodRequest("a", "eth0", "default", "a", Mode.MACVLAN)).pod
    assert pod.ips == ("198.18.8.10", "fd00:8::10")
    names = {o["metadata"]["name"]: o["spec"]["pool"] for o in kube_clean.get(IPALLOCATIONS.path())["items"]}
    assert names == {"198.18.8.10": "dual", "fd00-8--10": "dual"}
    status = wait_status(kube_clean, "dual", lambda found: found.get("allocated") == 2)
    assert status["total"] == 2 + 2**32 - 16
