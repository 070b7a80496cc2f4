"""VLAN pools end to end: plugin → agent → kernel and the real controller and switch.

Two pools share one subnet, `blue` in VLAN 100 and `red` in VLAN 200; each node has a pod of each.
The agent puts a VLAN pod's link on the uplink's sub-interface `eth0.<vid>` (one per node and
VLAN, gone with its last pod, also across an agent restart), and the switch keeps the VLANs apart:
pods of one VLAN reach each other and the external host's sub-interface in that VLAN, never the
other VLAN's, though every address is in the same subnet. The host's kernel has no 802.1Q support
(CONFIG_VLAN_8021Q): these tests run inside User-Mode Linux (deploy/uml/pytest_plugin.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pyroute2 import IPRoute

from deploy.lab import netns as lab_netns
from deploy.lab.control import PoolSpec
from deploy.lab.rig import Host, Rig
from underlay_testbed import Segment, ns_of, run_segment, start_agent, stop_agent, wait_for

pytestmark = [pytest.mark.rig, pytest.mark.uml]  # this host's kernel has no 802.1Q (8021q): User-Mode Linux has
SUBNET = "198.18.6.0/24"
POOLS = {"blue": PoolSpec(SUBNET, ranges=("198.18.6.100-198.18.6.199",), vlan=100),
         "red": PoolSpec(SUBNET, ranges=("198.18.6.100-198.18.6.199",), vlan=200)}
EXTERNAL = {100: "198.18.6.250", 200: "198.18.6.251"}


@pytest.fixture
def segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    yield from run_segment(rig, bridge, make_host, pinned=True, pools=POOLS)


def add(node, pod: str, cid: str, pool: str) -> dict:
    call = node.cni("ADD", node.conf(pool=pool), container_id=cid, netns=pod,
                    args=f"K8S_POD_NAMESPACE={pool};K8S_POD_NAME={cid}")
    assert call.returncode == 0, call.stdout
    return call.json


def delete(node, pod: str, cid: str, pool: str) -> None:
    call = node.cni("DEL", node.conf(pool=pool), container_id=cid, netns=pod)
    assert call.returncode == 0, call.stdout


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


def ping(ns: str, address: str, *, via: str | None = None) -> bool:
    bind = ["-I", via] if via else []
    return lab_netns.run(ns, ["ping", "-n", "-c", "1", "-W", "1", *bind, address], check=False).returncode == 0


def arping(ns: str, address: str) -> bool:
    """An ARP request for `address` answered (by the switch's responder or a host)."""
    return lab_netns.run(ns, ["arping", "-c", "1", "-w", "1", "-I", "eth0", address], check=False).returncode == 0


def vlan_links(host: Host) -> dict[str, int]:
    """The node's VLAN sub-interfaces: name → VID."""
    with IPRoute(netns=host.netns, flags=0) as ipr:
        found = {}
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "vlan":
                found[link.get_attr("IFLA_IFNAME")] = info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VLAN_ID")
        return found


def external_in_vlan(rig: Rig, external: Host, vid: int) -> str:
    """The external host's tagged sub-interface for `vid` (its port is trusted: it carries every
    VLAN), moved into a namespace of its own, so each VLAN's replies leave by its own link; the
    namespace's name."""
    ns, link = f"{rig.prefix}-ext{vid}", f"v{vid}"
    lab_netns.create(ns)
    external.run("ip", "link", "add", "link", external.ifname, "name", link, "type", "vlan", "id", str(vid))
    external.run("ip", "link", "set", link, "netns", ns)
    lab_netns.run(ns, ["ip", "addr", "add", f"{EXTERNAL[vid]}/24", "dev", link])
    lab_netns.run(ns, ["ip", "link", "set", link, "up"])
    return ns


def add_pods(nodes: dict[str, object], pods, wanted: list[tuple[str, str]]) -> dict[str, tuple[object, str, str]]:
    """ADD a pod of each (node, pool): name → (node, pod netns path, ip)."""
    made = {}
    for node_name, pool in wanted:
        name = f"{pool}-{node_name}"
        path = pods.make(name)
        made[name] = (nodes[node_name], path, ip_of(add(nodes[node_name], path, name, pool)))
    return made


def parent_of(path: str, node_host: Host) -> str:
    """The name of the node-side link the pod's eth0 is a child of."""
    with IPRoute(netns=ns_of(path), flags=0) as ipr:
        (eth0,) = ipr.link_lookup(ifname="eth0")
        parent_index = ipr.get_links(eth0)[0].get_attr("IFLA_LINK")
    with IPRoute(netns=node_host.netns, flags=0) as ipr:
        return str(ipr.get_links(parent_index)[0].get_attr("IFLA_IFNAME"))


def test_two_vlans_in_one_subnet_reach_their_own_vlan_only(make_node, pods, segment, rig):
    """A blue and a red pod on each node; the external host with a sub-interface in each VLAN (each
    in a namespace of its own) and, untagged, an address in the subnet too."""
    nodes = {"n1": make_node("n1"), "n2": make_node("n2")}
    made = add_pods(nodes, pods, [(n, pool) for n in nodes for pool in ("blue", "red")])
    blue1, blue2, red1, red2 = (made[n] for n in ("blue-n1", "blue-n2", "red-n1", "red-n2"))
    assert {ip for _, _, ip in made.values()} <= {f"198.18.6.{n}" for n in range(100, 200)}

    for name, (node, path, _) in made.items():  # tagged on the way out: a child of eth0.<vid>
        assert parent_of(path, node.host) == f"eth0.{100 if name.startswith('blue') else 200}"
    assert vlan_links(nodes["n1"].host) == {"eth0.100": 100, "eth0.200": 200}

    assert ping(ns_of(blue1[1]), blue2[2]) and ping(ns_of(red1[1]), red2[2]), "within a VLAN"
    assert arping(ns_of(blue1[1]), blue2[2]), "ARP within the VLAN is answered"
    for (_, source, _), (_, _, target) in ((blue1, red2), (red1, blue2)):
        assert not arping(ns_of(source), target), f"an ARP request from {source} was answered across VLANs"
        assert not ping(ns_of(source), target), f"{source} reached {target} across VLANs"

    outside = {vid: external_in_vlan(rig, segment.external, vid) for vid in EXTERNAL}
    for name, (_, path, ip) in made.items():
        own, other = (100, 200) if name.startswith("blue") else (200, 100)
        assert ping(outside[own], ip), f"the external host's VLAN {own} does not reach {name}"
        assert ping(ns_of(path), EXTERNAL[own])
        assert not ping(outside[other], ip), f"the external host's VLAN {other} reached {name}"
    segment.external.run("ip", "addr", "add", "198.18.6.252/24", "dev", segment.external.ifname)
    assert not ping(segment.external.netns, blue1[2]), "the external host, untagged, reached a VLAN pod"
    assert not ping(ns_of(red1[1]), EXTERNAL[100]), "a red pod reached the external host's VLAN 100"


def test_the_vlan_link_goes_with_its_last_pod_also_after_an_agent_restart(make_node, pods, segment, rig):
    node = make_node("n1")
    made = add_pods({"n1": node}, pods, [("n1", "blue"), ("n1", "red")])
    delete(node, made["blue-n1"][1], "blue-n1", "blue")
    assert vlan_links(node.host) == {"eth0.200": 200}, "eth0.100 had no pod left"
    stop_agent(node.process)
    restarted = start_agent(rig, node.argv, host=node.host, socket=node.socket, log=node.log, bin_dir=node.bin_dir)
    try:
        assert vlan_links(node.host) == {"eth0.200": 200}, "a restart keeps the VLAN link its pod is on"
        delete(restarted, made["red-n1"][1], "red-n1", "red")
        wait_for(lambda: not vlan_links(node.host), what="eth0.200 to go with its last pod")
    finally:
        stop_agent(restarted.process)


def test_an_operators_own_vlan_link_is_used_and_kept(make_node, pods, segment):
    node = make_node("n1")
    node.host.run("ip", "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100")
    path = pods.make("blue")
    add(node, path, "blue", "blue")
    assert parent_of(path, node.host) == "eth0.100"
    delete(node, path, "blue", "blue")
    assert vlan_links(node.host) == {"eth0.100": 100}
