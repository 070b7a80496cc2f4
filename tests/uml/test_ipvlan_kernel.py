"""ipvlan, the way the node agent will use it: why it needs UML, and that it works there.

An ipvlan l2 child shares its parent's MAC, so hosts on the segment learn the pod IP at the node's
uplink MAC: the MAC the controller's ARP responder must answer with for ipvlan pods.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from deploy.lab import netns
from deploy.lab.rig import Host, Rig

pytestmark = pytest.mark.rig
IPVLAN_L2 = 0  # pyroute2's ipvlan_mode (IFLA_IPVLAN_MODE): 0 is IPVLAN_MODE_L2


def add_ipvlan(host: Host, ifname: str) -> None:
    with IPRoute(netns=host.netns) as ipr:
        ipr.link("add", ifname=ifname, kind="ipvlan", link=ipr.link_lookup(ifname=host.ifname)[0],
                 ipvlan_mode=IPVLAN_L2)


@pytest.fixture
def pod_ns(rig: Rig) -> Iterator[str]:
    name = f"{rig.prefix}-ipod"
    netns.create(name)
    yield name
    netns.remove(name)


def test_this_kernel_has_no_ipvlan(make_host: Callable[..., Host]) -> None:
    """Why tests marked `uml` boot User-Mode Linux: this kernel cannot make an ipvlan link at all."""
    node = make_host("noipv")
    with pytest.raises(NetlinkError) as refused:
        add_ipvlan(node, "ipv0")
    assert refused.value.code == errno.EOPNOTSUPP, f"unexpected refusal: {refused.value}"


@pytest.mark.uml
def test_ipvlan_l2_pod_reaches_other_node_at_node_mac(rig: Rig, bridge: str, make_host: Callable[..., Host],
                                                       pod_ns: str) -> None:
    node1 = make_host("n1", cidr="198.18.3.1/24")
    node2_ip, pod_ip = "198.18.3.2", "198.18.3.10"
    node2 = make_host("n2", cidr=f"{node2_ip}/24")
    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")

    add_ipvlan(node1, "ipv0")
    with IPRoute(netns=node1.netns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="ipv0")[0], net_ns_fd=pod_ns)
    pod_mac = netns.configure(pod_ns, "ipv0", cidr=f"{pod_ip}/24")
    with IPRoute(netns=pod_ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="ipv0")[0], state="up")

    assert pod_mac == node1.mac, "an ipvlan child carries its parent's MAC"
    assert netns.run(pod_ns, ["ping", "-n", "-c", "2", "-W", "2", node2_ip], check=False).returncode == 0
    assert node2.ping(pod_ip)
    with IPRoute(netns=node2.netns) as ipr:
        learned = {n.get("NDA_LLADDR") for n in ipr.get_neighbours(dst=pod_ip)}
    assert learned == {node1.mac}, "node2 must reach the pod at node1's uplink MAC"
