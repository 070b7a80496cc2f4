"""The agent's tests share their fixtures with tests/cni through `underlay_testbed`."""

from underlay_testbed import cni_bin, make_node, pods, segment  # noqa: F401
