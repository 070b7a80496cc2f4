"""VLAN pools as IPPool objects (pure): `spec.vlan` read, overlap judged per VLAN, and an
IPAllocation that records its pod's VLAN."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_allocations import POD

from controller.kube.allocations import Phase, Slot, from_object, to_object
from controller.kube.pools import Verdict, judge, read_pool


def ippool(name: str, created: str, **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name, "creationTimestamp": created, "generation": 1}, "spec": spec}


def test_an_ippools_vlan_is_the_pools() -> None:
    assert read_pool(ippool("blue", "2026-01-01T00:00:00Z", subnet="198.18.6.0/24", vlan=100)).config.vlan == 100  # type: ignore[union-attr]
    assert read_pool(ippool("plain", "2026-01-01T00:00:00Z", subnet="198.18.6.0/24")).config.vlan is None  # type: ignore[union-attr]


@pytest.mark.parametrize("vlan", [0, 4095, "100"])
def test_an_ippool_with_an_impossible_vlan_says_why(vlan: object) -> None:
    pool = read_pool(ippool("p", "2026-01-01T00:00:00Z", subnet="198.18.6.0/24", vlan=vlan))
    assert pool.config is None and pool.error is not None
    assert pool.error.startswith("ippool p: spec.vlan: ") and "is not a VLAN id (1-4094)" in pool.error


def test_pools_in_different_vlans_share_a_subnet_and_one_vlan_does_not() -> None:
    pools = [read_pool(ippool("blue", "2026-01-01T00:00:00Z", subnet="198.18.6.0/24", vlan=100)),
             read_pool(ippool("red", "2026-01-02T00:00:00Z", subnet="198.18.6.0/24", vlan=200)),
             read_pool(ippool("plain", "2026-01-03T00:00:00Z", subnet="198.18.6.0/24")),
             read_pool(ippool("blue2", "2026-01-04T00:00:00Z", subnet="198.18.6.0/25", vlan=100))]
    verdicts = judge(pools)
    assert [verdicts[name].ready for name in ("blue", "red", "plain")] == [True, True, True]
    assert verdicts["blue2"] == Verdict(False, "OverlapsPool",
                                        "its addresses overlap pool blue (198.18.6.0-198.18.6.127); it serves none until fixed")


def test_an_allocation_keeps_its_pods_vlan() -> None:
    pod = replace(POD, vlan=100)
    obj = to_object(pod.ip, Slot(Phase.BOUND, "web", pod, pod.sticky))
    assert obj["spec"]["vlan"] == 100
    assert from_object(obj)[1].pod == pod
    assert "vlan" not in to_object(POD.ip, Slot(Phase.BOUND, "web", POD))["spec"]  # untagged: as before
