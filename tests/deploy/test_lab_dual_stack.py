"""`underlay-lab up --dual-stack` end to end, through its command line: every pod gets both families
from the real controller's dual-stack pool, the external host reaches each over IPv6 with the
switch's flows answering its Neighbor Solicitations (packet-ins +0), and a node reaches its own
pods over IPv6 through the host shim. macvlan here; ipvlan in User-Mode Linux nodes:
tests/deploy/test_lab_uml_nodes.py."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from deploy.lab import netns
from deploy.lab.lab import Lab
from labcli import running_lab, status
from openflow.model import link_local

pytestmark = pytest.mark.rig
PING = ("ping", "-n", "-c", "1", "-W", "2")


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab6")


@pytest.fixture(scope="module")
def lab(lab_dir):
    with running_lab(lab_dir, "--dual-stack", "--nodes", "2", "--pods-per-node", "1") as run:
        yield run


def test_every_pod_has_one_address_of_each_family(lab):
    state = status(lab)

    assert state["dual_stack"] and len(state["pods"]) == 2
    for pod in state["pods"]:
        assert ipaddress.ip_address(pod["ip"]) in ipaddress.ip_network("198.18.0.0/24")
        assert ipaddress.ip_address(pod["ip6"]) in ipaddress.ip_network("fd00:18::/64")
    assert len({p["ip6"] for p in state["pods"]}) == 2
    assert [n["ip6"] for n in state["nodes"]] == ["fd00:18::11", "fd00:18::12"]


def test_demo_reaches_every_pod_over_ipv6_with_nd_answered_by_the_switch(lab):
    demo = lab("demo")

    assert ("IPv6: all 2 pods reached by ping6 and TCP; 2 of 2 Neighbor Solicitations answered by the "
            "switch's responder flows") in demo.stdout
    assert "all 2 pods reached from the external host; 2 of 2 ARP requests" in demo.stdout


def test_the_external_hosts_neighbour_table_has_the_pod_mac_from_a_flow(lab, lab_dir):
    """Each row: the external host forgot the address, pinged it, and its `ip -6 neigh` has the pod's
    MAC; the responder flow's counter rose and the controller's packet-in counter did not."""
    rows = Lab(lab_dir, progress=lambda _: None).demo()

    assert [(row["ip6"], row["nd_reply_mac"]) for row in rows] == [(p["ip6"], p["mac"]) for p in status(lab)["pods"]]
    assert all(row["nd_flow_hits"] >= 1 and row["nd_packet_ins"] == 0 and row["ping6"] for row in rows), rows


def test_the_pods_link_has_exactly_its_link_local_and_takes_no_router_advertisements(lab):
    pod = status(lab)["pods"][0]
    addresses = json.loads(netns.run(pod["netns"], ["ip", "-j", "-6", "addr", "show", "dev", "eth0"]).stdout)
    routes = json.loads(netns.run(pod["netns"], ["ip", "-j", "-6", "route", "show", "default"]).stdout)

    assert {a["local"] for a in addresses[0]["addr_info"]} == {pod["ip6"], link_local(pod["ip6"])}
    assert [r["gateway"] for r in routes] == ["fd00:18::1"], "the pool's gateway"
    assert netns.run(pod["netns"], ["sysctl", "-n", "net.ipv6.conf.eth0.accept_ra"]).stdout.strip() == "0"


def test_node_and_its_own_pod_reach_each_other_over_ipv6(lab):
    state = status(lab)
    pod = next(p for p in state["pods"] if p["node"] == "node1")
    route = json.loads(lab("exec", "node1", "--", "ip", "-j", "-6", "route", "get", pod["ip6"]).stdout)[0]

    assert (route["dev"], route["prefsrc"]) == ("ulshim0", "fd00:18::11")
    assert lab("exec", "node1", "--", *PING, pod["ip6"]).returncode == 0
    assert lab("exec", pod["name"], "--", *PING, "fd00:18::11").returncode == 0


def test_check_agrees_with_the_controller_on_both_addresses(lab_dir):
    """CHECK through the node's chain: the link has both addresses of the cached result, and the
    controller places the same two (its `ips`)."""
    lab = Lab(lab_dir, progress=lambda _: None)
    for pod in lab.state.pods.values():
        lab.run_cni("CHECK", pod)


def test_tcp_over_ipv6_between_pods_on_different_nodes(lab, lab_dir):
    result = Lab(lab_dir, progress=lambda _: None).exchange("node1-pod1", "node2-pod1", ipv6=True)

    assert result.ok, result


def test_a_restarted_agent_puts_back_the_nodes_ipv6_route_to_its_pod(lab):
    """The agent rebuilds the shim's host routes of both families from the kernel's pods on start."""
    pod = next(p for p in status(lab)["pods"] if p["node"] == "node1")
    lab("exec", "node1", "--", "ip", "-6", "route", "del", f"{pod['ip6']}/128", "dev", "ulshim0")
    assert lab("exec", "node1", "--", *PING, pod["ip6"], check=False).returncode != 0

    lab("restart", "agent", "node1")

    assert lab("exec", "node1", "--", *PING, pod["ip6"]).returncode == 0


def test_pod_add_with_an_address_of_each_family_then_del(lab):
    lab("pod", "add", "fixed6", "--node", "node2", "--ip", "198.18.0.150,fd00:18::150")
    pod = next(p for p in status(lab)["pods"] if p["name"] == "fixed6")
    assert (pod["ip"], pod["ip6"]) == ("198.18.0.150", "fd00:18::150")
    assert lab("exec", "external", "--", *PING, "fd00:18::150").returncode == 0

    lab("pod", "del", "fixed6")

    assert lab("exec", "external", "--", "ping", "-n", "-c", "1", "-W", "1", "fd00:18::150",
               check=False).returncode != 0
    assert "fd00:18::150" not in lab("exec", "node2", "--", "ip", "-6", "route", "show", "dev", "ulshim0").stdout
