"""The config's VLAN pools: `vlan` (1-4094) on a pool, and one subnet shared by pools in different
VLANs (not by two in one VLAN)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.config import ConfigError, parse


def config(**pools: dict[str, Any]) -> dict[str, Any]:
    return {"store": "s", "pools": pools}


def test_a_pool_carries_its_vlan() -> None:
    parsed = parse(config(blue={"subnet": "198.18.6.0/24", "vlan": 100, "default": True},
                          plain={"subnet": "198.18.7.0/24"}))
    assert parsed.pools["blue"].vlan == 100
    assert parsed.pools["plain"].vlan is None


@pytest.mark.parametrize("vlan", [0, 4095, -1, 70000, "100", 1.5, True])
def test_a_vlan_outside_1_to_4094_is_refused_naming_the_key(vlan: object) -> None:
    with pytest.raises(ConfigError, match=r"^pools\.blue\.vlan: .* is not a VLAN id \(1-4094\)$"):
        parse(config(blue={"subnet": "198.18.6.0/24", "vlan": vlan}))


def test_one_subnet_in_two_vlans_is_two_pools() -> None:
    parsed = parse(config(blue={"subnet": "198.18.6.0/24", "vlan": 100, "default": True},
                          red={"subnet": "198.18.6.0/24", "vlan": 200}))
    assert [pool.vlan for pool in parsed.pools.values()] == [100, 200]


@pytest.mark.parametrize(("a", "b", "message"), [
    (100, 100, "pools.red.ranges: overlap pool blue in VLAN 100"),
    (None, None, "pools.red.ranges: overlap pool blue"),
])
def test_one_subnet_twice_in_one_vlan_is_refused(a: int | None, b: int | None, message: str) -> None:
    blue = {"subnet": "198.18.6.0/24", "default": True} | ({} if a is None else {"vlan": a})
    red = {"subnet": "198.18.6.0/25"} | ({} if b is None else {"vlan": b})
    with pytest.raises(ConfigError, match=f"^{message}$"):
        parse(config(blue=blue, red=red))


def test_an_untagged_pool_and_a_vlan_pool_may_share_a_subnet() -> None:
    parsed = parse(config(plain={"subnet": "198.18.6.0/24", "default": True},
                          blue={"subnet": "198.18.6.0/24", "vlan": 100}))
    assert parsed.pools["blue"].vlan == 100
