"""A VLAN pool's pod on a kernel without 802.1Q (this machine's: no CONFIG_VLAN_8021Q): the ADD
fails with a CNI error saying so, and leaves nothing behind (no link, no allocation). On a kernel
with 802.1Q, tests/node_agent/test_vlan_pools.py is where VLAN pods are made."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from deploy.lab.control import PoolSpec
from deploy.lab.rig import Host, Rig
from underlay_testbed import Segment, links_in, ns_of, run_segment

pytestmark = pytest.mark.rig
POOLS = {"blue": PoolSpec("198.18.6.0/24", ranges=("198.18.6.100-198.18.6.199",), vlan=100)}


def kernel_has_vlans() -> bool:
    probe = subprocess.run(["unshare", "--net", "ip", "link", "add", "link", "lo", "name", "ulprobe0", "type", "vlan",
                            "id", "5"], capture_output=True, text=True, timeout=10)
    refusal = probe.stderr.lower()  # without 802.1Q: "Unknown device type" (or "not supported")
    return not ("not supported" in refusal or "unknown device type" in refusal)


@pytest.fixture
def segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    yield from run_segment(rig, bridge, make_host, pinned=True, pools=POOLS)


def test_a_vlan_pod_on_a_kernel_without_8021q_is_refused_and_rolled_back(make_node, pods, segment):
    if kernel_has_vlans():
        pytest.skip("this kernel has 802.1Q: VLAN pods are made (tests/node_agent/test_vlan_pools.py)")
    node, path = make_node("n1"), pods.make("blue")
    call = node.cni("ADD", node.conf(pool="blue"), container_id="blue", netns=path,
                    args="K8S_POD_NAMESPACE=blue;K8S_POD_NAME=blue")
    assert call.returncode != 0
    error = json.loads(call.stdout)
    assert error["code"] == 100
    assert error["msg"] == ("pod blue/blue: failed to create VLAN 100 link eth0.100 on eth0: this kernel has no "
                            "802.1Q VLAN support (CONFIG_VLAN_8021Q, module 8021q)")
    assert links_in(ns_of(path)) == ["lo"], "the pod's link was left behind"
    assert segment.allocations("n1") == {}, "the allocation was left behind"
    assert node.cni("DEL", node.conf(pool="blue"), container_id="blue", netns=path).returncode == 0
