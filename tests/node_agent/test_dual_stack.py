"""Dual stack on the pod's link, made by the real agent with the reference host-local handing out
one address of each family (two ranges), no controller: what the kernel then has, the node reaching
its pod over IPv6 through the shim, the unsolicited NA a neighbour's kernel takes, rollback and DEL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.lab import netns
from openflow.model import link_local
from underlay_testbed import Node, links_in, ns_of, wait_for

pytestmark = pytest.mark.rig
NODE_IP6 = "fd00:6::13"


def dual_conf(node: Node, data_dir: Path) -> dict:
    ranges6 = {"subnet": "fd00:6::/64", "rangeStart": "fd00:6::100", "gateway": "fd00:6::1"}
    ipam = {"type": "host-local", "dataDir": str(data_dir),
            "ranges": [[{"subnet": "198.18.5.0/24", "rangeStart": "198.18.5.150", "gateway": "198.18.5.1"}],
                       [ranges6]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    return node.conf("1.0.0", ipam=ipam)


@pytest.fixture
def node(make_node) -> Node:  # noqa: ANN001
    """A standalone node whose uplink has an IPv6 address too (the rig's namespaces start without IPv6)."""
    made: Node = make_node("n1", standalone=True)
    ns = made.host.netns
    netns.set_sysctl(ns, "net.ipv6.conf.eth0.disable_ipv6", "0")
    netns.run(ns, ["ip", "-6", "addr", "add", f"{NODE_IP6}/64", "dev", "eth0", "nodad"])
    return made


def ip_json(ns: str, *argv: str) -> list[dict]:
    return json.loads(netns.run(ns, ["ip", "-j", *argv]).stdout or "[]")


def sysctl(ns: str, key: str) -> str:
    return netns.run(ns, ["sysctl", "-n", key]).stdout.strip()


def ping(ns: str, address: str) -> bool:
    return netns.run(ns, ["ping", "-n", "-c", "1", "-W", "2", address], check=False).returncode == 0


def test_a_dual_stack_pod_gets_both_families_and_exactly_its_link_local(node, pods, tmp_path):
    pod = pods.make("p")
    conf = dual_conf(node, tmp_path / "ipam")

    add = node.cni("ADD", conf, container_id="c1", netns=pod)

    assert add.returncode == 0, add.stdout
    assert add.json["ips"] == [{"address": "198.18.5.150/24", "gateway": "198.18.5.1", "interface": 0},
                               {"address": "fd00:6::100/64", "gateway": "fd00:6::1", "interface": 0}]
    assert {"dst": "::/0", "gw": "fd00:6::1"} in add.json["routes"]
    ns = ns_of(pod)
    addrs = {(a["local"], a["prefixlen"]) for link in ip_json(ns, "addr", "show", "dev", "eth0")
             for a in link["addr_info"]}
    assert addrs == {("198.18.5.150", 24), ("fd00:6::100", 64), (link_local("fd00:6::100"), 64)}
    flags = [a for link in ip_json(ns, "-6", "addr", "show", "dev", "eth0") for a in link["addr_info"]]
    assert all(a.get("nodad") and not a.get("tentative") for a in flags), flags
    assert [sysctl(ns, f"net.ipv6.conf.eth0.{key}") for key in ("addr_gen_mode", "accept_ra", "autoconf")] == \
        ["1", "0", "0"]
    default = ip_json(ns, "-6", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in default] == [("fd00:6::1", "eth0")]
    assert node.cni("CHECK", dict(conf, prevResult=add.json), container_id="c1", netns=pod).returncode == 0


def test_the_node_and_its_pod_reach_each_other_over_ipv6_through_the_shim(node, pods, tmp_path):
    pod = pods.make("p")
    assert node.cni("ADD", dual_conf(node, tmp_path / "ipam"), container_id="c1", netns=pod).returncode == 0

    route = ip_json(node.host.netns, "-6", "route", "get", "fd00:6::100")[0]
    assert (route["dev"], route.get("prefsrc")) == ("ulshim0", NODE_IP6)
    assert ping(node.host.netns, "fd00:6::100"), "kubelet's probes come from the node"
    assert ping(ns_of(pod), NODE_IP6)
    assert ping(node.host.netns, "198.18.5.150"), "and IPv4 as before"


def test_add_sends_an_unsolicited_na_a_neighbours_kernel_takes(node, pods, tmp_path):
    """Pod b holds a stale, wrong MAC for pod a's next address; a's ADD sends a Neighbor
    Advertisement (override set, checksum right, hop limit 255) that b's kernel accepts: b's entry
    then has a's MAC. Both are macvlan siblings in bridge mode, so b hears a's multicast."""
    conf = dual_conf(node, tmp_path / "ipam")
    b = pods.make("b")
    assert node.cni("ADD", conf, container_id="cb", netns=b).returncode == 0
    netns.run(ns_of(b), ["ip", "-6", "neigh", "replace", "fd00:6::101", "dev", "eth0", "lladdr",
                         "02:00:00:00:00:99", "nud", "stale"])
    a = pods.make("a")

    add = node.cni("ADD", conf, container_id="ca", netns=a)

    assert add.returncode == 0, add.stdout
    assert add.json["ips"][1]["address"] == "fd00:6::101/64"
    mac = add.json["interfaces"][0]["mac"]

    def b_knows_a() -> bool:
        entries = ip_json(ns_of(b), "-6", "neigh", "show", "fd00:6::101", "dev", "eth0")
        return bool(entries) and entries[0].get("lladdr") == mac

    wait_for(b_knows_a, what=f"pod b's neighbour entry for fd00:6::101 to take a's MAC {mac}")


def test_an_ipv4_only_pod_on_a_node_with_ipv6_is_left_without_ipv6(node, pods, tmp_path):
    """The node's uplink has an IPv6 address, the pod asks for IPv4 only and its namespace has IPv6
    off (as many runtimes make it): ADD neither needs nor turns on IPv6 there."""
    pod = pods.make("p")
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "198.18.5.0/24", "rangeStart": "198.18.5.160"}]]}

    add = node.cni("ADD", node.conf("1.0.0", ipam=ipam), container_id="c1", netns=pod)

    assert add.returncode == 0, add.stdout
    assert sysctl(ns_of(pod), "net.ipv6.conf.eth0.disable_ipv6") == "1"
    assert ping(node.host.netns, "198.18.5.160")


def test_an_ipv6_only_pod(node, pods, tmp_path):
    """One IPv6 range only: the attachment's one address is IPv6, host route and all."""
    pod = pods.make("p")
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "fd00:6::/64", "rangeStart": "fd00:6::200", "gateway": "fd00:6::1"}]]}
    conf = node.conf("1.0.0", ipam=ipam)

    add = node.cni("ADD", conf, container_id="c1", netns=pod)

    assert add.returncode == 0, add.stdout
    assert [ip["address"] for ip in add.json["ips"]] == ["fd00:6::200/64"]
    assert ping(node.host.netns, "fd00:6::200")
    assert node.cni("CHECK", dict(conf, prevResult=add.json), container_id="c1", netns=pod).returncode == 0
    assert node.cni("DEL", conf, container_id="c1", netns=pod).returncode == 0
    assert "fd00:6::200" not in netns.run(node.host.netns, ["ip", "-6", "route", "show", "dev", "ulshim0"]).stdout


def test_a_failed_dual_stack_add_leaves_nothing_and_del_is_idempotent(node, pods, tmp_path):
    """The IPv6 step fails (the requested MTU is below IPv6's minimum of 1280, so the kernel
    refuses the address): the link, the host routes of both families and both leases are undone."""
    pod = pods.make("p")
    conf = dual_conf(node, tmp_path / "ipam")

    failed = node.cni("ADD", dict(conf, mtu=1200), container_id="c1", netns=pod)

    assert failed.returncode == 1 and "pod container c1:" in failed.json["msg"], failed.stdout
    assert links_in(ns_of(pod)) == ["lo"]
    assert [p.name for p in (tmp_path / "ipam" / "underlay").glob("*") if p.name[0].isdigit() or ":" in p.name] == []
    shim_routes = netns.run(node.host.netns, ["ip", "-6", "route", "show", "dev", "ulshim0"], check=False).stdout
    assert "fd00:6::" not in shim_routes
    add = node.cni("ADD", conf, container_id="c2", netns=pod)
    assert add.returncode == 0, add.stdout
    for _ in range(2):
        assert node.cni("DEL", conf, container_id="c2", netns=pod).returncode == 0
    assert links_in(ns_of(pod)) == ["lo"]
    assert "fd00:6::100" not in netns.run(node.host.netns, ["ip", "-6", "route", "show", "dev", "ulshim0"]).stdout
    assert "fd00:6::100" not in netns.run(node.host.netns, ["ip", "-6", "neigh", "show", "dev", "ulshim0"]).stdout
