"""The attack tests: each does what a hostile pod, node or client would, on the real parts, and
asserts it fails. They reuse the controller tests' builders (tests/controller/ctlfakes.py) and the
plugin, agent and segment fixtures of tests/node_agent/underlay_testbed.py: a real controller beside
the rig's Open vSwitch, node hosts, an external host on a trusted port."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "controller"), str(TESTS / "node_agent"), str(TESTS / "openflow")]

from attacker import register  # noqa: E402
from underlay_testbed import Segment, cni_bin, make_node, pods, run_segment, segment  # noqa: E402, F401

from deploy.lab.rig import Host, Rig  # noqa: E402


@pytest.fixture
def unpinned_segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    """The segment, but the controller learns each node's port from the node's first frame."""
    yield from run_segment(rig, bridge, make_host, pinned=False)


@pytest.fixture
def seen_segment(segment: Segment) -> Segment:
    """The nodes registered, and the external host heard on its trusted port (it pinged n2)."""
    register(segment.controller, *segment.hosts.values())
    assert segment.external.ping(segment.hosts["n2"].ip)
    return segment
