"""The attack tests reuse the controller tests' builders (tests/controller/ctlfakes.py) and the
plugin and agent fixtures of tests/node_agent/underlay_testbed.py."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "controller"), str(TESTS / "node_agent")]

from underlay_testbed import cni_bin, make_node, pods  # noqa: E402, F401
