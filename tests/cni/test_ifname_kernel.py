"""`cni.spec.valid_ifname` against the real kernel: a name is valid exactly when the kernel creates a
link under that very name (in a throwaway namespace of the rig's)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2 import IPRoute, NetlinkError

from cni.spec import valid_ifname
from deploy.lab import netns
from deploy.lab.rig import Rig

pytestmark = pytest.mark.rig
PEER = "ulpeer012345678"  # 15 bytes: no generated name of interest collides with it


@pytest.fixture(scope="module")
def ipr(rig: Rig) -> Iterator[IPRoute]:
    name = f"{rig.prefix}-ifnames"
    netns.create(name)
    try:
        with IPRoute(netns=name) as route:
            yield route
    finally:
        netns.remove(name)


def kernel_takes(ipr: IPRoute, name: str) -> bool:
    """Whether `ip link add <name>` makes a link called exactly `name` (EEXIST: the name is fine)."""
    try:
        ipr.link("add", ifname=name, kind="veth", peer=PEER)
    except NetlinkError as err:
        return err.code == errno.EEXIST
    try:
        return bool(ipr.link_lookup(ifname=name))
    finally:
        ipr.link("del", ifname=PEER)


# Bytes the kernel's rule is about, in names of about its length limit; NUL is left out (netlink
# cuts the name there, so the kernel never sees it: we refuse it, see test_spec_input).
NAMES = st.text(alphabet=st.sampled_from("ab0-_.:/% \t\n\v\f\r\x01\x7fà é\u00a0\u2003€"), min_size=1, max_size=17)


EXAMPLES = ["eth0", "a%d", "aà", "a\x01", "é" * 7, "é" * 8, ".", "..", "...", "0123456789abcde", "0123456789abcdef"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_kernel_cases_we_know(ipr: IPRoute, name: str) -> None:
    assert valid_ifname(name) is kernel_takes(ipr, name)


@settings(max_examples=150, deadline=None)
@given(NAMES)
def test_valid_ifname_is_what_the_kernel_takes(ipr: IPRoute, name: str) -> None:
    assert valid_ifname(name) is kernel_takes(ipr, name)
