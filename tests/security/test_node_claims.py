"""A node (its agent's token) registers an identity that is someone else's: the MAC or the IP of the
host on the trusted port (a router, an external host). It must be refused, and the host keep its
traffic.

Before, the claim was accepted: with the host's MAC the node's placement sent every frame for the
host to the node's port; with the host's IP the switch's ARP responder answered for the host's
address with the node's MAC, so the segment's traffic for it went to the node.
"""

from __future__ import annotations

import pytest

from deploy.lab import frames
from deploy.lab.control import ApiError

pytestmark = pytest.mark.rig


def who_has(asker, ip: str) -> list[str]:
    request = frames.Arp(op=1, sha=asker.mac, spa=asker.ip, tha="00:00:00:00:00:00", tpa=ip,
                         eth_src=asker.mac, eth_dst=frames.BROADCAST)
    return [reply.sha for reply in frames.arp_exchange(asker.netns, asker.ifname, request, timeout=1.0)]


@pytest.mark.parametrize("claim", ["mac", "ip"])
def test_a_node_cannot_register_the_external_hosts_identity(seen_segment, claim):
    seg = seen_segment
    ext, n1, n2 = seg.external, seg.hosts["n1"], seg.hosts["n2"]
    identity = {"mac": n1.mac, "ip": n1.ip, claim: getattr(ext, claim)}
    with pytest.raises(ApiError) as refused:
        seg.controller.request("PUT", "/v1/nodes/n1", identity, node="n1")
    assert refused.value.status == 409
    what = f"MAC {ext.mac}" if claim == "mac" else ext.ip
    assert f"node n1: {what} is in use on the segment: seen lately on switch" in str(refused.value)
    assert seg.controller.request("GET", "/v1/health", node="n1")["stats"]["node_claims_refused"] == 1

    assert who_has(n2, ext.ip) == [ext.mac]  # the host answers for itself, nobody for it
    assert n2.ping(ext.ip)
    seg.controller.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip}, node="n1")  # its own: fine
    assert n1.ping(ext.ip)
