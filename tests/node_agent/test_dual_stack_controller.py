"""Dual stack with the real controller: a pool of both families, the agent asking for one address of
each and getting both in one ADD, the external host reaching the pod over IPv6 through the switch's
flows, DEL releasing both, and a controller that lost its store getting both back from the agent."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from deploy.lab import netns
from deploy.lab.control import PoolSpec
from deploy.lab.rig import Host, Rig
from openflow.model import link_local
from underlay_testbed import POD_RANGE, SUBNET, Segment, run_segment, wait_for

pytestmark = pytest.mark.rig
POOL = PoolSpec(SUBNET, ranges=(POD_RANGE,), subnet6="fd00:5::/64", ranges6=("fd00:5::100-fd00:5::1ff",),
                gateway6="fd00:5::1", routes=(("::/0", "fd00:5::1"),))
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


@pytest.fixture
def segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    """The testbed's segment with a dual-stack pool; node n1 and the external host have IPv6 (the
    node exactly its link-local, as the switch allows once the agent registered its address)."""
    for made in run_segment(rig, bridge, make_host, pinned=True, pool=POOL):
        for host, ip6 in ((made.hosts["n1"], "fd00:5::11"), (made.external, "fd00:5::200")):
            netns.configure_ipv6(host.netns, "eth0", f"{ip6}/64", link_local=link_local(ip6))
        yield made


def ping(ns: str, address: str) -> bool:
    return netns.run(ns, ["ping", "-n", "-c", "1", "-W", "2", address], check=False).returncode == 0


def test_one_add_gets_both_families_and_del_releases_both(make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("p")

    add = node.cni("ADD", node.conf("1.0.0"), container_id="c1", netns=pod, args=K8S.format("web-0"))

    assert add.returncode == 0, add.stdout
    v4, v6 = (ip["address"].split("/")[0] for ip in add.json["ips"])
    assert add.json["ips"][1] == {"address": f"{v6}/64", "gateway": "fd00:5::1", "interface": 0}
    assert {"dst": "::/0", "gw": "fd00:5::1"} in add.json["routes"]
    assert segment.allocations("n1")[("c1", "eth0")]["ips"] == [v4, v6]
    assert ping(segment.external.netns, v6), "the switch answered the external host's solicitation"
    assert node.cni("CHECK", dict(node.conf("1.0.0"), prevResult=add.json), container_id="c1",
                    netns=pod).returncode == 0

    assert node.cni("DEL", node.conf("1.0.0"), container_id="c1", netns=pod).returncode == 0

    assert segment.allocations("n1") == {}
    assert not ping(segment.external.netns, v6)


def test_fixed_addresses_of_both_families_from_cni_args(make_node, pods, segment):
    node = make_node("n1")

    add = node.cni("ADD", node.conf("1.0.0"), container_id="c1", netns=pods.make("p"),
                   args=K8S.format("web-0") + ";IP=198.18.5.150,fd00:5::150")

    assert add.returncode == 0, add.stdout
    assert [ip["address"] for ip in add.json["ips"]] == ["198.18.5.150/24", "fd00:5::150/64"]
    assert ping(segment.external.netns, "fd00:5::150")


def test_a_controller_that_lost_its_store_gets_both_addresses_back_from_the_agent(make_node, pods, segment):
    """Restarted without its store, the controller hears of the pod at the agent's next sync, which
    asks for the pod's two addresses again (its IPv6 one is not the first free one, so only asking
    for it gets it back): both are placed and reachable as before."""
    node = make_node("n1", resync_interval="3600")
    add = node.cni("ADD", node.conf("1.0.0"), container_id="c1", netns=pods.make("p"),
                   args=K8S.format("web-0") + ";IP=fd00:5::150")
    assert add.returncode == 0, add.stdout
    addresses = [ip["address"].split("/")[0] for ip in add.json["ips"]]
    segment.controller.stop(kill=True)
    for path in segment.controller.workdir.glob("store.sqlite*"):
        path.unlink()
    segment.controller.start()
    segment.controller.wait_healthy(timeout=15, switches=1)

    later = node.cni("ADD", node.conf("1.0.0"), container_id="c2", netns=pods.make("q"), args=K8S.format("web-1"))

    assert later.returncode == 0, later.stdout
    wait_for(lambda: segment.allocations("n1").get(("c1", "eth0"), {}).get("ips") == addresses,
             what=f"the controller to hold {addresses} for c1 again")
    assert ping(segment.external.netns, addresses[1])
