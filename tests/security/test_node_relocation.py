"""A pod forges its source MAC to be another node's: the node must stay where it is.

With learned (not pinned) node ports, the controller learns a node's port from the first frame its
MAC sends. Before, one frame from a pod carrying the MAC of a node not yet located moved that node
(and so all its pods, and its uplink's flows) to the pod's port, and the node's own frames were
dropped from then on. A node is now learned only on a port no other node holds (a pod sits behind
its node's port, so never there), and never moved once it has pods; a refusal is a WARNING in the
controller's log and a count in /v1/health.
"""

from __future__ import annotations

import pytest
from attacker import marker, place, pod_namespace, register
from underlay_testbed import wait_for

from deploy.lab import frames

pytestmark = pytest.mark.rig


def placements(controller) -> dict[str, tuple[int, int]]:
    """owner -> (dpid, port) of every placement the controller has."""
    answer = controller.request("GET", "/v1/placements", node="n1")["placements"]
    return {p["owner"]: (p["dpid"], p["port"]) for p in answer}


def stats(controller) -> dict[str, int]:
    return controller.request("GET", "/v1/health", node="n1")["stats"]


def forged_arp(pod, *, as_mac: str, as_ip: str) -> bytes:
    """A gratuitous ARP from `as_mac`/`as_ip`, sent from the pod (a marker in the padding)."""
    body = frames.arp_frame(frames.Arp(op=1, sha=as_mac, spa=as_ip, tha="00:00:00:00:00:00", tpa=as_ip,
                                       eth_src=as_mac, eth_dst=frames.BROADCAST))
    return body + marker()


def test_a_pod_cannot_locate_another_node_at_its_port(unpinned_segment, rig):
    seg = unpinned_segment
    controller, n1, n2 = seg.controller, seg.hosts["n1"], seg.hosts["n2"]
    register(controller, n1, n2)
    n1.run("arping", "-c", "1", "-w", "2", "-I", n1.ifname, seg.external.ip, check=False)  # n1 speaks first
    wait_for(lambda: "node/n1" in placements(controller), what="n1 to be located")
    answer = place(controller, "n1", "mover")

    with pod_namespace(rig, n1, "mover", ip=answer["ip"], mac=answer["mac"]) as pod:
        before = stats(controller)
        for _ in range(3):
            frames.send(pod.netns, pod.ifname, forged_arp(pod, as_mac=n2.mac, as_ip=n2.ip))
        wait_for(lambda: stats(controller).get("node_locations_refused", 0) > before.get("node_locations_refused", 0)
                 or "node/n2" in placements(controller), what="the controller to decide on the forged frame")

        assert "node/n2" not in placements(controller), "a pod's frame located n2 at the pod's port"
        log = controller.logfile.read_text()
        assert f"node location refused node=n2 mac={n2.mac}" in log
        assert f"port={n1.ofport}" in log and "held_by=n1" in log

        n2.run("arping", "-c", "1", "-w", "2", "-I", n2.ifname, seg.external.ip, check=False)  # n2 itself speaks
        wait_for(lambda: "node/n2" in placements(controller), what="n2 to be located by its own frame")
        assert placements(controller)["node/n2"][1] == n2.ofport
        assert placements(controller)["default/mover"][1] == n1.ofport
        assert seg.external.ping(n2.ip) and seg.external.ping(pod.ip)
