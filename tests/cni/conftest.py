"""The plugin's tests run it against real agents: the fixtures live in tests/node_agent/underlay_testbed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node_agent"))

from underlay_testbed import cni_bin, make_node, pods, segment  # noqa: E402, F401
