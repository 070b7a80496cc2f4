"""IPAllocation objects of IPv6 addresses and of dual-stack interfaces (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.kube.allocations import Phase, Slot, address_of, from_object, name_for, to_object
from controller.store import Mode, Pod

POD = Pod("c1", "eth0", "n1", "default", "web-0", "web", "198.18.0.5", "02:55:c6:12:00:05", Mode.MACVLAN,
          "default/web-0@u1", created_at=1700000000.5, ip6="fd00:18::5")  # fmt: skip
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize(("ip", "name"), [
    ("198.18.0.5", "198.18.0.5"),  # as it always was
    ("fd00:18::5", "fd00-18--5"),
    ("::5", "0--5"),
    ("fd00::", "fd00--0"),
    ("::", "0--0"),
    ("2001:db8:0:1:1:1:1:1", "2001-db8-0-1-1-1-1-1"),
])
def test_names(ip: str, name: str) -> None:
    assert (name_for(ip), address_of(name)) == (name, ip)


@given(st.ip_addresses(v=6))
def test_every_ipv6_address_has_one_valid_name_and_back(address: ipaddress.IPv6Address) -> None:
    name = name_for(str(address))
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253
    assert address_of(name) == str(address)
    assert name_for(address.exploded) == name  # one address, one name, however it was written


def test_a_dual_stack_interface_s_objects_both_carry_it_whole() -> None:
    for ip in POD.ips:
        obj = to_object(ip, Slot(Phase.BOUND, "web", POD, POD.sticky))
        assert (obj["metadata"]["name"], obj["spec"]["address"]) == (name_for(ip), ip)
        assert obj["spec"]["interfaceAddresses"] == ["198.18.0.5", "fd00:18::5"]
        assert from_object(obj) == (ip, Slot(Phase.BOUND, "web", POD, POD.sticky))


def test_an_ipv6_only_interface_has_no_interface_addresses() -> None:
    pod = replace(POD, ip="fd00:18::5", ip6=None, mac="02:56:00:18:00:05", sticky=None)
    obj = to_object("fd00:18::5", Slot(Phase.COOLDOWN, "web", pod, None, 1700000100.5))
    assert "interfaceAddresses" not in obj["spec"] and obj["metadata"]["name"] == "fd00-18--5"
    assert from_object(obj) == ("fd00:18::5", Slot(Phase.COOLDOWN, "web", pod, None, 1700000100.5))
