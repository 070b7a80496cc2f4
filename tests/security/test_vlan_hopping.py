"""VLAN hopping: a pod of a VLAN pool tries to reach another VLAN, on the real switch.

Two pools share a subnet, `blue` in VLAN 100 and `red` in VLAN 200. The blue pod (on n1) sends raw
frames the way its link would (tagged 100), and then as an attacker would: tagged with red's VLAN,
double-tagged (802.1ad or 802.1Q outside, red's VLAN inside: the classic hop through a switch that
pops one tag), untagged, and as the red pod (its IP, in red's VLAN, with either MAC). The external
host, on a trusted port that carries every VLAN, asks for and sends to the blue pod from the wrong
VLAN. Each attack must fail; its honest twin (the same frame in the blue pod's own VLAN) must
arrive, which shows the capture sees what gets through. The frames are made by hand, so no 802.1Q
device is needed: this runs on the host's kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import pytest
from attacker import arrives, marker, place, pod_namespace, register

from deploy.lab import frames
from deploy.lab.control import PoolSpec
from deploy.lab.rig import Host, Rig
from underlay_testbed import Segment, run_segment

pytestmark = pytest.mark.rig
SUBNET = "198.18.6.0/24"
POOLS = {"blue": PoolSpec(SUBNET, ranges=("198.18.6.100-198.18.6.199",), vlan=100),
         "red": PoolSpec(SUBNET, ranges=("198.18.6.100-198.18.6.199",), vlan=200)}
BLUE, RED = 100, 200
Q, AD = frames.ETH_P_8021Q, frames.ETH_P_8021AD
UNPLACED = "198.18.6.250"


@pytest.fixture
def segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    yield from run_segment(rig, bridge, make_host, pinned=True, pools=POOLS)


@pytest.fixture
def placed(rig, segment) -> Iterator[tuple[Host, dict, dict]]:
    """The blue pod's namespace on n1 (a plain macvlan: it tags its frames by hand), its answer and
    the red pod's (placed on n2, only its flows are needed)."""
    register(segment.controller, *segment.hosts.values())
    blue = place(segment.controller, "n1", "blue-pod", pool="blue")
    red = place(segment.controller, "n2", "red-pod", pool="red")
    assert (blue["vlan"], red["vlan"]) == (BLUE, RED)
    with pod_namespace(rig, segment.hosts["n1"], "blue-pod", ip=blue["ip"], mac=blue["mac"]) as pod:
        yield pod, blue, red


def udp(*, src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, tags: tuple[tuple[int, int], ...],
        mark: bytes) -> bytes:
    payload = frames.ipv4_udp(src=src_ip, dst=dst_ip, payload=mark)
    return frames.ethernet(dst=dst_mac, src=src_mac, ethertype=frames.ETH_P_IP, payload=payload, tags=tags)


def arp_request(*, sha: str, spa: str, tpa: str, tags: tuple[tuple[int, int], ...], mark: bytes = b"") -> bytes:
    body = frames.arp_frame(frames.Arp(op=1, sha=sha, spa=spa, tha="00:00:00:00:00:00", tpa=tpa, eth_src=sha,
                                       eth_dst=frames.BROADCAST))[14:]
    return frames.ethernet(dst=frames.BROADCAST, src=sha, ethertype=frames.ETH_P_ARP, payload=body + mark, tags=tags)


def untagged(frame: bytes) -> bytes:
    """`frame` without its VLAN tags (a capture may or may not have had them taken off)."""
    while struct.unpack("!H", frame[12:14])[0] in (Q, AD):
        frame = frame[:12] + frame[16:]
    return frame


SENT_BY_THE_BLUE_POD = {
    "own-vlan-100": ((Q, BLUE),),  # the honest twin
    "red-vlan-200": ((Q, RED),),
    "untagged": (),
    "priority-tag": ((Q, 0),),
    "qinq-88a8-100-then-8100-200": ((AD, BLUE), (Q, RED)),
    "double-8100-100-then-8100-200": ((Q, BLUE), (Q, RED)),
    "qinq-88a8-200-then-8100-100": ((AD, RED), (Q, BLUE)),
}


@pytest.mark.parametrize("tags", SENT_BY_THE_BLUE_POD.values(), ids=SENT_BY_THE_BLUE_POD.keys())
def test_a_vlan_pod_sends_in_its_own_vlan_only(segment, placed, tags):
    """Its own MAC and IP: only tagged with its own VLAN, once, does a frame leave its port."""
    pod, blue, red = placed
    honest = tags == ((Q, BLUE),)
    ext, mark = segment.external, marker()
    to_ext = udp(src_mac=pod.mac, src_ip=pod.ip, dst_mac=ext.mac, dst_ip=UNPLACED, tags=tags, mark=mark)
    assert arrives(pod, to_ext, ext, mark=mark) == honest, f"{tags}: {'lost' if honest else 'hopped'} to ext"
    mark = marker()
    to_red = udp(src_mac=pod.mac, src_ip=pod.ip, dst_mac=red["mac"], dst_ip=red["ip"], tags=tags, mark=mark)
    assert not arrives(pod, to_red, segment.hosts["n2"], mark=mark), f"{tags}: reached the red pod's port"
    mark = marker()
    flood = arp_request(sha=pod.mac, spa=pod.ip, tpa=UNPLACED, tags=tags, mark=mark)
    assert arrives(pod, flood, ext, mark=mark) == honest, f"{tags}: ARP broadcast {'lost' if honest else 'hopped'}"


@pytest.mark.parametrize("as_mac", ["own-mac", "red-mac"])
def test_a_vlan_pod_cannot_speak_as_the_other_vlans_pod(segment, placed, as_mac):
    """The red pod's IP in the red VLAN, from the blue pod's port: IPv4 and a gratuitous ARP."""
    pod, blue, red = placed
    mac = pod.mac if as_mac == "own-mac" else red["mac"]
    ext = segment.external
    mark = marker()
    spoof = udp(src_mac=mac, src_ip=red["ip"], dst_mac=ext.mac, dst_ip=UNPLACED, tags=((Q, RED),), mark=mark)
    assert not arrives(pod, spoof, ext, mark=mark), "the red pod's IP was spoofed from the blue pod's port"
    mark = marker()
    announce = arp_request(sha=mac, spa=red["ip"], tpa=red["ip"], tags=((Q, RED),), mark=mark)
    assert not arrives(pod, announce, ext, mark=mark), "a gratuitous ARP for the red pod's IP got out"
    mark = marker()
    honest = udp(src_mac=pod.mac, src_ip=pod.ip, dst_mac=ext.mac, dst_ip=UNPLACED, tags=((Q, BLUE),), mark=mark)
    assert arrives(pod, honest, ext, mark=mark), "the control: the blue pod in its own VLAN"


@pytest.mark.parametrize("vid", [BLUE, RED, None], ids=["own-vlan-100", "other-vlan-200", "untagged"])
def test_only_the_pods_vlan_gets_an_arp_answer(segment, placed, vid):
    """The external host asks for the blue pod's IP: the switch answers in VLAN 100 only."""
    pod, blue, _ = placed
    ext = segment.external
    request = arp_request(sha=ext.mac, spa=UNPLACED, tpa=blue["ip"], tags=() if vid is None else ((Q, vid),))
    got = frames.capture(ext.netns, ext.ifname, timeout=1.0, send_first=request,
                         until=lambda frame: _reply_for(frame, blue["ip"]) is not None)
    replies = [reply for reply in (_reply_for(frame, blue["ip"]) for frame in got) if reply is not None]
    if vid == BLUE:
        assert [reply.sha for reply in replies] == [blue["mac"]]
    else:
        assert replies == [], f"VLAN {vid}: the blue pod's IP was answered"


def _reply_for(frame: bytes, ip: str) -> frames.Arp | None:
    arp = frames.parse_arp(untagged(frame))
    return arp if arp is not None and arp.op == 2 and arp.spa == ip else None


@pytest.mark.parametrize("vid", [BLUE, RED, None], ids=["own-vlan-100", "other-vlan-200", "untagged"])
def test_a_frame_to_the_pods_mac_arrives_in_its_vlan_only(segment, placed, vid):
    """From the trusted port to the blue pod's MAC: not even flooded to its node in another VLAN."""
    pod, blue, _ = placed
    ext, mark = segment.external, marker()
    frame = udp(src_mac=ext.mac, src_ip=UNPLACED, dst_mac=blue["mac"], dst_ip=blue["ip"],
                tags=() if vid is None else ((Q, vid),), mark=mark)
    assert arrives(ext, frame, segment.hosts["n1"], mark=mark) == (vid == BLUE)
