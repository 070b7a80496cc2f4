"""Configuration paths of ADD: ipvlan on a kernel without it, the default master, standalone IPAM."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from underlay_testbed import links_in, ns_of

pytestmark = pytest.mark.rig


def test_ipvlan_on_this_kernel_is_a_clear_error(make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("p")

    call = node.cni("ADD", node.conf(mode="ipvlan"), container_id="c1", netns=pod)

    assert call.returncode == 1
    assert call.json["msg"] == "pod container c1: this kernel has no ipvlan support (CONFIG_IPVLAN)"
    assert links_in(ns_of(pod)) == ["lo"]
    assert segment.allocations("n1") == {}


def test_master_defaults_to_the_default_routes_interface(make_node, pods):
    node = make_node("n1", master="")
    with IPRoute(netns=node.host.netns, flags=0) as ipr:
        ipr.route("add", dst="0.0.0.0/0", gateway="198.18.5.1")
    conf = {k: v for k, v in node.conf().items() if k != "master"}

    call = node.cni("ADD", conf, container_id="c1", netns=pods.make("p"))

    assert call.returncode == 0, call.stdout


def test_standalone_with_host_local_ipam(make_node, pods, tmp_path):
    """No controller: the plugin delegates addresses to the reference host-local IPAM plugin."""
    node = make_node("n1", standalone=True)
    pod = pods.make("p")
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "198.18.6.0/24", "rangeStart": "198.18.6.10", "gateway": "198.18.6.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}
    conf = node.conf("1.0.0", ipam=ipam)

    add = node.cni("ADD", conf, container_id="c1", netns=pod)

    assert add.returncode == 0, add.stdout
    assert add.json["ips"] == [{"address": "198.18.6.10/24", "gateway": "198.18.6.1", "interface": 0}]
    assert (tmp_path / "ipam" / "underlay" / "198.18.6.10").exists()
    assert node.cni("CHECK", dict(conf, prevResult=add.json), container_id="c1", netns=pod).returncode == 0
    assert node.cni("DEL", conf, container_id="c1", netns=pod).returncode == 0
    assert not (tmp_path / "ipam" / "underlay" / "198.18.6.10").exists()
    assert links_in(ns_of(pod)) == ["lo"]
