"""Dual-stack pools in the config: the IPv6 keys beside the IPv4 ones, and their errors."""

from __future__ import annotations

from typing import Any

import pytest

from controller.config import ConfigError, Family, parse


def _pool(**keys: Any) -> Any:
    return parse({"store": "s", "pools": {"p": keys}}).pools["p"]


def test_a_dual_stack_pool_has_both_families_ipv4_first() -> None:
    pool = _pool(subnet="198.18.0.0/24", gateway="198.18.0.1", subnet6="fd00:18::/64",
                 ranges6=["fd00:18::100-fd00:18::1ff"], gateway6="fd00:18::1",
                 routes=[{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "::/0", "gw": "fd00:18::1"}],
                 exclude=["fd00:18::150", "198.18.0.7"])
    assert pool.families == (
        Family(4, "198.18.0.0/24", (("198.18.0.0", "198.18.0.255"),), "198.18.0.1"),
        Family(6, "fd00:18::/64", (("fd00:18::100", "fd00:18::1ff"),), "fd00:18::1"),
    )
    assert [route.dst for route in pool.routes] == ["0.0.0.0/0", "::/0"]
    assert pool.exclude == ("fd00:18::150/128", "198.18.0.7/32")  # as written


def test_an_ipv6_only_pool_takes_the_whole_subnet6_but_its_anycast_address() -> None:
    pool = _pool(subnet6="FD00:18:0::/64")
    assert pool.subnet is None and pool.ranges == ()
    assert pool.families == (Family(6, "fd00:18::/64", (("fd00:18::1", "fd00:18::ffff:ffff:ffff:ffff"),)),)


def test_an_ipv4_pool_is_as_it_always_was() -> None:
    pool = _pool(subnet="198.18.0.0/30")
    assert pool.families == (Family(4, "198.18.0.0/30", (("198.18.0.0", "198.18.0.3"),)),)
    assert pool.subnet6 is None and pool.ranges6 == ()


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"subnet6": "198.18.0.0/24"}, "pools.p.subnet6: '198.18.0.0/24' is an IPv4 network: write it as subnet"),
        ({"subnet6": "fd00::1/64"}, "pools.p.subnet6: 'fd00::1/64' has host bits set (did you mean fd00::/64?)"),
        ({"gateway": "198.18.0.1"}, "pools.p.subnet: missing (a pool needs subnet, subnet6 or both)"),
        ({"subnet": "198.18.0.0/24", "ranges6": ["fd00::1-fd00::2"]}, "pools.p.ranges6: given without subnet6"),
        ({"subnet6": "fd00::/64", "gateway": "198.18.0.1"}, "pools.p.gateway: given without subnet"),
        ({"subnet6": "fd00::/64", "ranges6": ["fd00:1::1-fd00:1::2"]}, "pools.p.ranges6: 'fd00:1::1-fd00:1::2' is not inside fd00::/64"),
        ({"subnet6": "fd00::/64", "ranges6": ["fd00::1-198.18.0.5"]}, "pools.p.ranges6[0]: 'fd00::1-198.18.0.5' mixes IPv4 and IPv6"),
        ({"subnet6": "fd00::/64", "gateway6": "fd00::"}, "pools.p.gateway6: fd00:: is not a host address of fd00::/64"),
        ({"subnet6": "fd00::/64", "gateway6": "198.18.0.1"}, "pools.p.gateway6: 198.18.0.1 is not a host address of fd00::/64"),
        ({"subnet": "198.18.0.0/24", "gateway": "fd00::1"}, "pools.p.gateway: fd00::1 is not a host address of 198.18.0.0/24"),
        ({"subnet6": "fd00::/64", "routes": [{"dst": "::/0", "gw": "198.18.0.1"}]},
         "pools.p.routes[0]: gw 198.18.0.1 is not of the family of dst ::/0"),
        ({"subnet6": "fd00::/64", "routes": [{"dst": "::/0", "gw": "fd01::1"}]},
         "pools.p.routes: gateway fd01::1 of ::/0 is not in fd00::/64"),
        ({"subnet6": "fd00::/64", "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}]},
         "pools.p.routes: gateway 198.18.0.1 of 0.0.0.0/0 is not in a subnet of the pool (it has no subnet)"),
    ],
)
def test_errors_name_their_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _pool(**keys)
    assert str(raised.value) == error


def test_pools_may_not_share_ipv6_addresses() -> None:
    pools = {"a": {"subnet6": "fd00::/64", "default": True}, "b": {"subnet6": "fd00::/120"}}
    with pytest.raises(ConfigError, match=r"^pools.b.ranges6: overlap pool a$"):
        parse({"store": "s", "pools": pools})


def test_a_dual_stack_pool_and_an_ipv4_pool_side_by_side() -> None:
    pools = {"a": {"subnet": "198.18.0.0/25", "subnet6": "fd00::/64", "default": True}, "b": {"subnet": "198.18.0.128/25"}}
    config = parse({"store": "s", "pools": pools})
    assert [len(pool.families) for pool in config.pools.values()] == [2, 1]
