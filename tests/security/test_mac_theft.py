"""A pod asks for a MAC that is someone else's: the external host's (on a trusted port: a router, a
gateway), a node's, another pod's. It must be refused, naming the holder, and the host keep its
traffic; and when the pod puts that MAC on its link anyway, Open vSwitch's own MAC table (NORMAL)
must never learn it at the pod's port.

Before, the request was accepted: a `dl_dst=<that MAC> actions=output:<pod port>` flow took every
frame for the host, and the pod's gratuitous ARP taught NORMAL the same for 30 s after the DEL.
"""

from __future__ import annotations

import re

import pytest
from attacker import place, pod_namespace

from deploy.lab import netns
from deploy.lab.control import ApiError

pytestmark = pytest.mark.rig
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


def fdb(segment) -> dict[str, int]:
    """Open vSwitch's NORMAL MAC table of the bridge: MAC -> port."""
    table = segment.rig.ovs.appctl("fdb/show", segment.bridge)
    return {mac: int(port) for port, mac in re.findall(r"^\s*(\d+)\s+\d+\s+([0-9a-f:]{17})", table, re.MULTILINE)}


def test_a_pod_cannot_take_the_external_hosts_mac(seen_segment):
    seg = seen_segment
    ext, n1, n2 = seg.external, seg.hosts["n1"], seg.hosts["n2"]
    with pytest.raises(ApiError) as refused:
        place(seg.controller, "n1", "thief", mac=ext.mac)
    assert refused.value.status == 409
    assert f"pod default/thief: MAC {ext.mac} is in use on the segment" in str(refused.value)
    assert f"port {ext.ofport}" in str(refused.value)
    assert f"dl_dst={ext.mac}" not in seg.rig.ovs.ofctl("dump-flows", seg.bridge)
    assert n2.ping(ext.ip) and n1.ping(ext.ip)  # nobody cut off


@pytest.mark.parametrize("whose", ["n2", "another-pod"])
def test_a_pod_cannot_take_a_nodes_or_another_pods_mac(seen_segment, whose):
    seg = seen_segment
    mac = seg.hosts["n2"].mac if whose == "n2" else place(seg.controller, "n2", "owner")["mac"]
    with pytest.raises(ApiError) as refused:
        place(seg.controller, "n1", "thief", mac=mac)
    assert refused.value.status == 409
    assert f"pod default/thief: MAC {mac} is " + ("node n2's uplink" if whose == "n2" else "held by default/owner") \
        in str(refused.value)


def test_the_plugin_refuses_the_same_theft_with_an_error_naming_the_holder(seen_segment, make_node, pods):
    seg = seen_segment
    node = make_node("n1")
    call = node.cni("ADD", node.conf(), container_id="thief", netns=pods.make("thief"),
                    args=K8S.format("thief") + f";MAC={seg.external.mac.upper()}")
    assert call.returncode != 0 and call.json["code"] != 0, call
    assert f"MAC {seg.external.mac} is in use on the segment" in call.json["msg"], call.json
    assert seg.allocations("n1") == {}
    assert seg.hosts["n2"].ping(seg.external.ip)


def test_normal_never_learns_a_stolen_mac_at_the_pods_port(seen_segment, rig):
    """The refused pod puts the external host's MAC on its link anyway and announces it: port
    security drops those frames before NORMAL sees them."""
    seg = seen_segment
    ext, n1, n2 = seg.external, seg.hosts["n1"], seg.hosts["n2"]
    with pytest.raises(ApiError):
        place(seg.controller, "n1", "thief", mac=ext.mac)
    answer = place(seg.controller, "n1", "thief")  # a pod it may be, with a MAC of its own
    with pod_namespace(rig, n1, "thief", ip=answer["ip"], mac=ext.mac) as pod:
        pod.run("arping", "-c", "2", "-w", "3", "-U", "-I", pod.ifname, pod.ip, check=False)  # gratuitous ARP
        pod.run("ping", "-c", "2", "-i", "0.2", "-W", "1", n2.ip, check=False)
        seg.rig.ovs.appctl("revalidator/wait")
        assert fdb(seg).get(ext.mac) in (None, ext.ofport), seg.rig.ovs.appctl("fdb/show", seg.bridge)
        assert n2.ping(ext.ip)
        netns.run(n2.netns, ["ip", "neigh", "flush", "dev", n2.ifname])
        assert n2.ping(ext.ip)  # and ARP for the external host still finds it
