"""A pod sends VLAN-tagged frames carrying its own, correct MAC and IP: they must reach nobody.

Port security checks a frame's MAC and IP; before it also checked the tag, an 802.1Q (or QinQ,
or priority-tagged) frame from a pod passed and NORMAL carried it into that VLAN on every trunk:
to the external host and the other node. The untagged twin of each frame must still arrive
(the control that shows the capture sees what gets through).
"""

from __future__ import annotations

import pytest
from attacker import arrives, marker, place, pod_namespace, register

from deploy.lab import frames

pytestmark = pytest.mark.rig

TAGS = {
    "untagged": (),
    "dot1q-vlan100": ((frames.ETH_P_8021Q, 100),),
    "qinq-88a8-outside-8100": ((frames.ETH_P_8021AD, 100), (frames.ETH_P_8021Q, 200)),
    "priority-tag-vid0": ((frames.ETH_P_8021Q, 0),),
}
UNPLACED = "198.18.5.250"


@pytest.fixture
def attacker(rig, segment):
    """A placed macvlan pod on n1, in its own namespace, with exactly the MAC and IP it was given."""
    register(segment.controller, *segment.hosts.values())
    answer = place(segment.controller, "n1", "vlan-attacker")
    with pod_namespace(rig, segment.hosts["n1"], "vlan-attacker", ip=answer["ip"], mac=answer["mac"]) as pod:
        yield pod


def udp_frame(pod, target, tags, mark: bytes) -> bytes:
    payload = frames.ipv4_udp(src=pod.ip, dst=target.ip, payload=mark)
    return frames.ethernet(dst=target.mac, src=pod.mac, ethertype=frames.ETH_P_IP, payload=payload, tags=tags)


def arp_frame(pod, target, tags, mark: bytes) -> bytes:
    """A broadcast ARP request from the pod's own MAC and IP, for an address nobody holds (the switch
    answers those of placed ones itself): flooded to every host. The marker rides in the padding."""
    body = frames.arp_frame(frames.Arp(op=1, sha=pod.mac, spa=pod.ip, tha="00:00:00:00:00:00", tpa=UNPLACED,
                                       eth_src=pod.mac, eth_dst=frames.BROADCAST))[14:]
    return frames.ethernet(dst=frames.BROADCAST, src=pod.mac, ethertype=frames.ETH_P_ARP, payload=body + mark,
                           tags=tags)


@pytest.mark.parametrize("build", [udp_frame, arp_frame], ids=["ipv4", "arp"])
@pytest.mark.parametrize("to", ["ext", "n2"])
@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_only_untagged_frames_leave_a_pod(segment, attacker, build, to, tags):
    target = segment.external if to == "ext" else segment.hosts[to]
    mark = marker()
    got_there = arrives(attacker, build(attacker, target, tags, mark), target, mark=mark)
    assert got_there == (tags == ()), f"{'untagged' if not tags else tags} frame {'did not reach' if not tags else 'reached'} {to}"
