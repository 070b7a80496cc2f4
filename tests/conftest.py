"""Fixtures for the real-parts tests: one private Open vSwitch per session, hosts per test.

The rig logic lives in `deploy.lab` (the lab reuses it); these fixtures only wrap it. A missing
prerequisite fails the test with one line saying what is missing: never a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from deploy.lab.rig import Host, MissingPrerequisite, Rig

# Property tests check behaviour, not speed (that is tests/bench's job): no per-example deadline,
# which a loaded machine (a shared 2-core one) trips at random.
settings.register_profile("underlay", deadline=None)
settings.load_profile("underlay")

# Tests marked `uml` (they need ipvlan, which this kernel lacks) run inside one User-Mode Linux
# instance and report here as ordinary results: see deploy/uml/pytest_plugin.py. The `k8s` and
# `k8s_namespace` fixtures (a real control plane for the session) come from deploy/k8s/pytest_plugin.py.
pytest_plugins = ("deploy.uml.pytest_plugin", "deploy.k8s.pytest_plugin")


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    try:
        lab_rig = Rig().start()
    except MissingPrerequisite as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        yield lab_rig
    finally:
        lab_rig.stop()


@pytest.fixture
def bridge(rig: Rig) -> Iterator[str]:
    """A fresh bridge (datapath_type=netdev, fail_mode=secure, OpenFlow13, pinned dpid) per test."""
    name = rig.add_bridge()
    yield name
    rig.ovs.vsctl("--if-exists", "del-br", name)


@pytest.fixture
def make_host(rig: Rig, bridge: str) -> Iterator[Callable[..., Host]]:
    """Factory: make_host("h1", cidr="198.18.0.1/24") cables a new namespace to this test's bridge."""
    made: list[Host] = []

    def make(name: str, **kwargs: object) -> Host:
        host = rig.add_host(name, bridge, **kwargs)  # type: ignore[arg-type]
        made.append(host)
        return host

    yield make
    from deploy.lab import netns

    for host in made:
        netns.remove(host.netns)
        rig.hosts.pop(host.name, None)
