"""IPAM rules, one test each, plus a property: no two live leases ever share an address."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import config as config_module
from controller.errors import BadRequest, ConflictError, TemporaryError
from controller.ipam import Ipam, Lease, Request, derive_mac, parse_mac

COOLDOWN = 30.0


def make_ipam(*, subnet: str = "198.18.0.0/29", **pool: object) -> Ipam:
    pools = {"default": {"subnet": subnet, "gateway": str(subnet).replace(".0/", ".1/").split("/")[0], **pool}}
    return Ipam(config_module.parse({"store": "x", "pools": pools}).pools.values(), cooldown=COOLDOWN)


def ask(ipam: Ipam, cid: str, *, now: float = 0.0, **fields: str) -> Lease:
    owner = fields.pop("owner", f"default/{cid}")
    lease = ipam.plan(Request(cid, "eth0", owner, **fields), now=now)
    ipam.commit(lease)
    return lease


def test_never_hands_out_network_broadcast_gateway_or_excluded() -> None:
    ipam = make_ipam(exclude=["198.18.0.3", "198.18.0.5-198.18.0.6"])
    ips = {ask(ipam, f"c{i}").ip for i in range(2)}
    assert ips == {"198.18.0.2", "198.18.0.4"}
    with pytest.raises(ConflictError, match=r"pool default: exhausted \(all 2 addresses"):
        ask(ipam, "c9")


def test_allocates_only_inside_ranges() -> None:
    ipam = make_ipam(subnet="198.18.0.0/24", ranges=["198.18.0.10-198.18.0.11", "198.18.0.200-198.18.0.200"])
    assert [ask(ipam, f"c{i}").ip for i in range(3)] == ["198.18.0.10", "198.18.0.11", "198.18.0.200"]


def test_same_interface_twice_gets_the_same_lease() -> None:
    ipam = make_ipam()
    first = ask(ipam, "c1")
    assert ipam.plan(Request("c1", "eth0", "default/c1"), now=5) == first
    assert ipam.plan(Request("c1", "eth0", "default/c1", ip=first.ip), now=5) == first
    assert ipam.plan(Request("c1", "eth1", "default/c1"), now=5).ip != first.ip


def test_same_interface_asking_for_another_address_is_a_conflict() -> None:
    ipam = make_ipam()
    ask(ipam, "c1")
    with pytest.raises(ConflictError, match="container c1/eth0 already holds 198.18.0.2, not the requested 198.18.0.4"):
        ipam.plan(Request("c1", "eth0", "default/c1", ip="198.18.0.4"), now=0)


def test_fixed_address_is_honoured() -> None:
    ipam = make_ipam()
    assert ask(ipam, "c1", ip="198.18.0.5").ip == "198.18.0.5"


def test_fixed_address_held_by_another_names_the_holder() -> None:
    ipam = make_ipam()
    ask(ipam, "db", ip="198.18.0.5", owner="default/db-1")
    with pytest.raises(ConflictError, match=r"^pod default/web-0: 198.18.0.5 is held by default/db-1$"):
        ipam.plan(Request("web", "eth0", "default/web-0", ip="198.18.0.5"), now=0)


@pytest.mark.parametrize("ip", ["198.18.0.1", "198.18.0.0", "198.18.0.7", "198.18.1.9"])
def test_fixed_address_must_be_allocatable(ip: str) -> None:
    with pytest.raises(BadRequest, match=f"ip: {ip} is not an allocatable address of pool default"):
        make_ipam().plan(Request("c1", "eth0", "default/c1", pool="default", ip=ip), now=0)


@pytest.mark.parametrize("ip", ["198.18.0", "fd00::1::", "banana", "198.18.0.256"])
def test_malformed_fixed_address_is_a_bad_request(ip: str) -> None:
    with pytest.raises(BadRequest, match="ip: .* is not an IPv4 or IPv6 address"):
        make_ipam().plan(Request("c1", "eth0", "default/c1", ip=ip), now=0)


def test_an_ipv6_address_from_an_ipv4_pool_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="^ip: fe80::1 is IPv6, and pool default has no IPv6 subnet6$"):
        make_ipam().plan(Request("c1", "eth0", "default/c1", ip="fe80::1"), now=0)


def test_unknown_pool() -> None:
    with pytest.raises(BadRequest, match="pool: no pool named 'nope'"):
        make_ipam().plan(Request("c1", "eth0", "default/c1", pool="nope"), now=0)


def test_fixed_address_without_pool_finds_its_pool() -> None:
    pools = {
        "a": {"subnet": "198.18.0.0/29", "default": True},
        "b": {"subnet": "198.18.1.0/29"},
    }
    ipam = Ipam(config_module.parse({"store": "x", "pools": pools}).pools.values(), cooldown=COOLDOWN)
    assert ask(ipam, "c1", ip="198.18.1.3").pool == "b"
    assert ask(ipam, "c2").pool == "a"


def test_released_address_cools_down_before_reuse() -> None:
    ipam = make_ipam(exclude=["198.18.0.3-198.18.0.6"])  # one address: .2
    ask(ipam, "c1", now=0)
    ipam.release(("c1", "eth0"), now=10)
    with pytest.raises(TemporaryError, match="pool default: every free address is cooling down") as cooling:
        ask(ipam, "c2", now=10 + COOLDOWN - 1)
    assert cooling.value.delay == pytest.approx(1)
    assert ask(ipam, "c2", now=10 + COOLDOWN).ip == "198.18.0.2"


def test_fresh_addresses_come_before_recently_released_ones() -> None:
    ipam = make_ipam()
    first = ask(ipam, "c1")
    ipam.release(first.key, now=0)
    later = [ask(ipam, f"c{i}", now=1000).ip for i in range(2, 6)]
    assert first.ip not in later[:3]


def test_rollback_frees_without_cooldown() -> None:
    ipam = make_ipam(exclude=["198.18.0.3-198.18.0.6"])
    lease = ask(ipam, "c1")
    ipam.rollback(lease.key)
    assert ask(ipam, "c2").ip == lease.ip


def test_rollback_undoes_a_new_sticky_reservation() -> None:
    ipam = make_ipam()
    lease = ask(ipam, "c1", sticky="default/web-0")
    ipam.rollback(lease.key)
    assert ipam.reserved() == {}
    moved = ask(ipam, "c2", sticky="default/web-0")
    ipam.release(moved.key, now=0)
    ipam.rollback(ask(ipam, "c3", ip="198.18.0.6", sticky="default/web-0").key)
    assert ipam.reserved() == {"default/web-0": moved.ip}


def test_sticky_key_gets_its_address_back_at_once_and_nobody_else_does() -> None:
    ipam = make_ipam()
    web = ask(ipam, "old", sticky="default/web-0", owner="default/web-0")
    ipam.release(web.key, now=1)
    others = [ask(ipam, f"c{i}", now=1000).ip for i in range(3)]
    assert web.ip not in others
    again = ask(ipam, "new", now=2, sticky="default/web-0", owner="default/web-0")
    assert again.ip == web.ip


def test_sticky_address_still_held_by_the_old_container_is_temporary() -> None:
    ipam = make_ipam()
    ask(ipam, "old", sticky="default/web-0", owner="default/web-0")
    with pytest.raises(TemporaryError, match="still held by container old/eth0 of default/web-0"):
        ipam.plan(Request("new", "eth0", "default/web-0", sticky="default/web-0"), now=1)


def test_address_reserved_for_a_sticky_key_is_refused_to_a_fixed_request() -> None:
    ipam = make_ipam()
    web = ask(ipam, "old", sticky="default/web-0")
    ipam.release(web.key, now=1)
    with pytest.raises(ConflictError, match=f"{web.ip} is reserved for sticky key default/web-0"):
        ipam.plan(Request("x", "eth0", "default/x", ip=web.ip), now=1000)


def test_fixed_address_moves_a_sticky_reservation() -> None:
    ipam = make_ipam()
    ask(ipam, "old", sticky="default/web-0")
    ipam.release(("old", "eth0"), now=1)
    moved = ask(ipam, "new", ip="198.18.0.6", sticky="default/web-0")
    assert ipam.reserved() == {"default/web-0": moved.ip}


def test_unreserve_returns_the_address_to_the_pool() -> None:
    ipam = make_ipam(exclude=["198.18.0.3-198.18.0.6"])
    web = ask(ipam, "old", sticky="default/web-0")
    ipam.release(web.key, now=0)
    assert ipam.unreserve("default/web-0") == web.ip
    assert ask(ipam, "c2", now=COOLDOWN).ip == web.ip


def test_exhaustion_is_a_conflict() -> None:
    ipam = make_ipam()
    for i in range(5):
        ask(ipam, f"c{i}")
    with pytest.raises(ConflictError, match=r"pool default: exhausted \(all 5 addresses are held or reserved\)"):
        ask(ipam, "c9")


def test_restore_continues_with_the_same_rules() -> None:
    ipam = make_ipam()
    held = ask(ipam, "c1")
    restored = make_ipam()
    restored.restore([held], sticky={"default/web-0": "198.18.0.3"}, released={"198.18.0.4": 100.0})
    assert restored.get(held.key) == held
    assert ask(restored, "c2", now=110).ip == "198.18.0.5"


def test_ten_thousand_allocations_are_fast() -> None:
    import time

    ipam = make_ipam(subnet="198.18.0.0/18")
    started = time.perf_counter()
    ips = {ask(ipam, f"c{i}").ip for i in range(10_000)}
    assert len(ips) == 10_000
    assert time.perf_counter() - started < 5.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "add_fixed", "add_sticky", "release", "tick"]),
                          st.integers(0, 7), st.integers(0, 5)), max_size=60))  # fmt: skip
def test_no_two_live_leases_share_an_address(ops: list[tuple[str, int, int]]) -> None:
    ipam, now = make_ipam(), 0.0
    for op, container, pick in ops:
        cid = f"c{container}"
        try:
            if op == "add":
                ask(ipam, cid, now=now)
            elif op == "add_fixed":
                ask(ipam, cid, now=now, ip=f"198.18.0.{2 + pick}")
            elif op == "add_sticky":
                ask(ipam, cid, now=now, sticky=f"default/s{pick}")
            elif op == "release":
                ipam.release((cid, "eth0"), now=now)
            else:
                now += 10 * pick
        except (ConflictError, TemporaryError, BadRequest):
            pass
        ips = [lease.ip for lease in ipam.leases()]
        assert len(ips) == len(set(ips))
        assert "198.18.0.1" not in ips


def test_derived_mac_is_local_unicast_and_follows_the_ip() -> None:
    mac = derive_mac("198.18.0.5")
    assert mac == "02:55:c6:12:00:05"
    assert int(mac[:2], 16) & 0x03 == 0x02  # locally administered, unicast


@pytest.mark.parametrize(
    ("text", "reason"),
    [("01:00:5e:00:00:01", "multicast"), ("ff:ff:ff:ff:ff:ff", "multicast"), ("00:00:00:00:00:00", "all-zero"),
     ("02:00:00:00:01", "not a MAC"), ("banana", "not a MAC")],
)  # fmt: skip
def test_requested_mac_is_validated(text: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=f"mac: .*{reason}"):
        parse_mac(text)


def test_requested_mac_is_normalised() -> None:
    assert parse_mac("02-AA-BB-CC-DD-EE") == "02:aa:bb:cc:dd:ee"
