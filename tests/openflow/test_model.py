"""openflow.model.link_local: the one derivation the agent (configuring the pod) and the switch
(letting it out) must agree on."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openflow.model import link_local


@pytest.mark.parametrize(("ip", "expected"), [
    ("fd00::5", "fe80::5"),
    ("2001:db8:1:2:aabb:ccff:fedd:eeff", "fe80::aabb:ccff:fedd:eeff"),
    ("fd00:0:0:7::1:5", "fe80::1:5"),
    ("fe80::9", "fe80::9"),
])
def test_the_link_local_keeps_the_interface_identifier(ip: str, expected: str) -> None:
    assert link_local(ip) == expected


@given(st.ip_addresses(v=6))
def test_every_ipv6_address_has_one_in_fe80_64_with_its_low_64_bits(address: ipaddress.IPv6Address) -> None:
    result = ipaddress.IPv6Address(link_local(str(address)))
    assert result in ipaddress.IPv6Network("fe80::/64")
    assert int(result) & (1 << 64) - 1 == int(address) & (1 << 64) - 1
    assert str(result) == result.compressed  # the form flows carry


@pytest.mark.parametrize("ip", ["198.18.0.5", "not-an-address", ""])
def test_anything_else_is_refused_by_name(ip: str) -> None:
    with pytest.raises(ValueError, match=ip or "does not appear"):
        link_local(ip)
