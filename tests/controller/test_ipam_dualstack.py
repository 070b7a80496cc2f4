"""IPAM with IPv6 and dual-stack pools: one address per family, planned together; huge ranges."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import config as config_module
from controller.errors import BadRequest, ConflictError, PoolCoolingDown, PoolExhausted, TemporaryError
from controller.ipam import Ipam, Lease, Pool, Request, derive_mac, key_of

COOLDOWN = 30.0


def make_ipam(**pool: Any) -> Ipam:
    keys = {"subnet": "198.18.0.0/29", "gateway": "198.18.0.1", "subnet6": "fd00:18::/120", "gateway6": "fd00:18::1"}
    pools = {"default": {**keys, **pool}}
    return Ipam(config_module.parse({"store": "x", "pools": {k: {key: v for key, v in p.items() if v is not None}
                                                              for k, p in pools.items()}}).pools.values(),
                cooldown=COOLDOWN)


def ask(ipam: Ipam, cid: str, *, now: float = 0.0, **fields: Any) -> Lease:
    lease = ipam.plan(Request(cid, "eth0", fields.pop("owner", f"default/{cid}"), **fields), now=now)
    ipam.commit(lease)
    return lease


def test_a_dual_stack_pod_gets_one_address_of_each_family() -> None:
    ipam = make_ipam()
    first, second = ask(ipam, "c1"), ask(ipam, "c2")
    assert (first.ip, first.ip6, first.ips) == ("198.18.0.2", "fd00:18::2", ("198.18.0.2", "fd00:18::2"))
    assert (second.ip, second.ip6) == ("198.18.0.3", "fd00:18::3")
    assert ipam.pools["default"].spaces[1].prefix == 120


def test_an_ipv6_only_pool_hands_out_ipv6_in_ip() -> None:
    ipam = make_ipam(subnet=None, gateway=None)
    lease = ask(ipam, "c1")
    assert (lease.ip, lease.ip6, lease.ips) == ("fd00:18::2", None, ("fd00:18::2",))  # ::1 is the gateway
    assert ipam.pools["default"].prefix == 120 and ipam.pools["default"].gateway == "fd00:18::1"


def test_requested_addresses_of_both_families_in_any_form() -> None:
    ipam = make_ipam()
    lease = ask(ipam, "c1", ips=("FD00:0018::00AB", "198.18.0.6"))
    assert lease.ips == ("198.18.0.6", "fd00:18::ab")
    assert ipam.plan(Request("c1", "eth0", "default/c1", ip="fd00:18::ab"), now=0) == lease  # idempotent


def test_a_requested_address_fixes_its_family_and_the_other_is_picked() -> None:
    lease = ask(make_ipam(), "c1", ip="fd00:18::9")
    assert lease.ips == ("198.18.0.2", "fd00:18::9")


def test_a_request_with_an_ipv6_address_finds_its_pool() -> None:
    pools = {"a": {"subnet": "198.18.0.0/29", "default": True}, "b": {"subnet": "198.18.1.0/29", "subnet6": "fd00:1::/64"}}
    ipam = Ipam(config_module.parse({"store": "x", "pools": pools}).pools.values(), cooldown=COOLDOWN)
    assert ask(ipam, "c1", ip="fd00:1::5").ips == ("198.18.1.1", "fd00:1::5")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"ips": ("198.18.0.2", "198.18.0.3")}, "ips: two IPv4 addresses (198.18.0.2, 198.18.0.3); at most one per family"),
        ({"ip": "fd00:18::5", "ips": ("fd00:18::6",)}, "ips: two IPv6 addresses (fd00:18::5, fd00:18::6); at most one per family"),
        ({"ips": ("fd00:18::",)}, "ip: fd00:18:: is not an allocatable address of pool default"),
        ({"ips": ("fd00:18::1",)}, "ip: fd00:18::1 is not an allocatable address of pool default"),
        ({"ips": ("fd00:18::1:0",)}, "ip: fd00:18::1:0 is not an allocatable address of pool default"),
        ({"ips": ("fd00:18::x",)}, "ips: 'fd00:18::x' is not an IPv4 or IPv6 address"),
        ({"ips": ("fd00:18::5%eth0",)}, "ips: 'fd00:18::5%eth0' is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_requests(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(BadRequest) as raised:
        ask(make_ipam(), "c1", **fields)
    assert str(raised.value) == error


def test_ip_and_ips_may_repeat_one_address() -> None:
    assert ask(make_ipam(), "c1", ip="198.18.0.5", ips=("198.18.0.5", "fd00:18::5")).ips == ("198.18.0.5", "fd00:18::5")


def test_ipv4_only_pool_refuses_an_ipv6_request_naming_the_key() -> None:
    with pytest.raises(BadRequest, match="^ip: fd00:18::5 is IPv6, and pool default has no IPv6 subnet6$"):
        ask(make_ipam(subnet6=None, gateway6=None), "c1", ips=("198.18.0.5", "fd00:18::5"))


def test_the_second_family_exhausted_plans_nothing_and_names_the_family() -> None:
    ipam = make_ipam(ranges6=["fd00:18::10-fd00:18::10"])
    ask(ipam, "c1")
    with pytest.raises(PoolExhausted, match=r"^pool default: IPv6 exhausted \(all 1 addresses are held or reserved\)$"):
        ipam.plan(Request("c2", "eth0", "default/c2"), now=0)
    assert ipam.get(("c2", "eth0")) is None and len(ipam.leases()) == 1
    ipam.release(("c1", "eth0"), now=0)  # its IPv4 address is free again at once, not cooling down:
    assert ask(ipam, "c2", now=COOLDOWN).ips == ("198.18.0.3", "fd00:18::10")  # the cursor moved past .2


def test_a_held_ipv6_address_is_refused_naming_its_holder() -> None:
    ipam = make_ipam()
    ask(ipam, "c1", ip="fd00:18::7")
    with pytest.raises(ConflictError, match="^pod default/c2: fd00:18::7 is held by default/c1$"):
        ask(ipam, "c2", ip="fd00:18::7")


def test_asking_again_for_another_ipv6_address_is_a_conflict() -> None:
    ipam = make_ipam()
    ask(ipam, "c1")
    with pytest.raises(ConflictError, match=r"already holds 198.18.0.2, fd00:18::2, not the requested fd00:18::9"):
        ask(ipam, "c1", ip="fd00:18::9")


def test_release_cools_down_both_families_and_a_cooling_ipv6_space_says_so() -> None:
    ipam = make_ipam(ranges6=["fd00:18::10-fd00:18::10"])
    ask(ipam, "c1")
    ipam.release(("c1", "eth0"), now=0)
    with pytest.raises(PoolCoolingDown, match=r"^pool default: every free IPv6 address is cooling down"):
        ipam.plan(Request("c2", "eth0", "default/c2"), now=1)
    assert ask(ipam, "c2", now=COOLDOWN).ip6 == "fd00:18::10"


def test_sticky_keeps_both_families_and_rollback_restores_what_it_had() -> None:
    ipam = make_ipam()
    first = ask(ipam, "c1", sticky="default/web-0")
    ipam.release(first.key, now=0)
    assert ipam.reserved() == {"default/web-0": "198.18.0.2,fd00:18::2"}
    again = ask(ipam, "c2", sticky="default/web-0", now=1)  # no cooldown for its own key
    assert again.ips == first.ips and again.sticky_before == first.ips
    ipam.rollback(again.key)
    assert ipam.reserved() == {"default/web-0": "198.18.0.2,fd00:18::2"}
    assert ipam.unreserve("default/web-0") == "198.18.0.2,fd00:18::2" and ipam.reserved() == {}


def test_a_sticky_key_from_ipv4_days_gains_an_ipv6_address_and_a_rollback_drops_it() -> None:
    ipam = make_ipam()
    ipam.restore((), sticky={"default/web-0": "198.18.0.5"}, released={})
    lease = ask(ipam, "c1", sticky="default/web-0")
    assert lease.ips == ("198.18.0.5", "fd00:18::2") and lease.sticky_before == ("198.18.0.5",)
    ipam.rollback(lease.key)
    assert ipam.reserved() == {"default/web-0": "198.18.0.5"}


def test_a_sticky_ipv6_address_still_held_is_a_temporary_error() -> None:
    ipam = make_ipam(subnet=None, gateway=None)
    ask(ipam, "c1", sticky="default/web-0")
    with pytest.raises(TemporaryError, match="fd00:18::2 .sticky default/web-0. is still held by container c1/eth0"):
        ask(ipam, "c2", sticky="default/web-0")


def test_a_slash_64_is_allocated_without_walking_it() -> None:
    ipam = make_ipam(subnet="198.18.0.0/24", subnet6="fd00:18::/64", exclude=["fd00:18::3-fd00:18::ffff"])
    space = ipam.pools["default"].spaces[1]
    assert space.size == 2**64 - 65535  # all but ::0 (anycast), ::1 (gateway) and ::3-::ffff
    leases = [ask(ipam, f"c{i}") for i in range(4)]  # two picks, then across the excluded block
    assert [lease.ip6 for lease in leases] == ["fd00:18::2", "fd00:18::1:0", "fd00:18::1:1", "fd00:18::1:2"]
    far = ask(ipam, "far", ip="fd00:18::ffff:ffff:ffff:fffe")  # the cursor follows it
    assert far.ip6 == "fd00:18::ffff:ffff:ffff:fffe"
    assert ask(ipam, "next").ip6 == "fd00:18::ffff:ffff:ffff:ffff"
    assert ask(ipam, "wrap").ip6 == "fd00:18::1:3"  # wrapped: steps over the four held only


def test_keys_keep_the_families_apart() -> None:
    assert key_of("0.0.0.5") != key_of("::5") and key_of("::5") > key_of("255.255.255.255")
    assert derive_mac("fd00:18::c612:5") == "02:56:c6:12:00:05"
    assert derive_mac("198.18.0.5") == "02:55:c6:12:00:05"


def test_pool_views_hold_ipv6_keys() -> None:
    config = config_module.parse({"store": "x", "pools": {"p": {"subnet6": "fd00::/126"}}}).pools["p"]
    pool = Pool.from_config(config)
    assert [pool.holds(key_of(f"fd00::{i}")) for i in range(4)] == [False, True, True, True]
    assert not pool.holds(key_of("0.0.0.1"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ask", "release", "rollback"]), st.integers(0, 7),
                          st.sampled_from([None, "s0", "s1"])), max_size=40))
def test_no_address_is_ever_held_twice_and_every_lease_has_both_families(steps: list[tuple[str, int, str | None]]) -> None:
    ipam = make_ipam(ranges6=["fd00:18::10-fd00:18::14"])
    now = 0.0
    for verb, index, sticky in steps:
        now += 7
        key = (f"c{index}", "eth0")
        if verb == "ask":
            try:
                ask(ipam, key[0], now=now, sticky=sticky)
            except (ConflictError, TemporaryError):
                pass
        elif verb == "release":
            ipam.release(key, now=now)
        else:
            ipam.rollback(key)
        addresses = [ip for lease in ipam.leases() for ip in lease.ips]
        assert len(addresses) == len(set(addresses))
        assert all(len(lease.ips) == 2 and ipaddress.ip_address(lease.ip6 or "").version == 6 for lease in ipam.leases())
        reserved = [ip for joined in ipam.reserved().values() for ip in joined.split(",")]
        assert len(reserved) == len(set(reserved))
