"""A pod spoofs IPv6: raw frames from its namespace, each with an honest twin.

The attacker is a macvlan pod on n1 with one address of each family: its IPv4 side placed by the
controller, its IPv6 side (fd00:5::64, link-local fe80::64) installed beside the controller's flows
as the pipeline builds it (`ofpeer.install_placements`: the controller's pools are IPv4 only here);
a victim pod on n2 likewise (fd00:5::65). Each hostile frame must not reach the external host; its
honest twin (the same frame with the pod's own address, MAC or no tag, or the message a pod may send
instead) must, which shows the capture would have seen it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from attacker import arrives, marker, place, pod_namespace, register
from ofpeer import install_placements

from deploy.lab import frames
from deploy.lab.rig import Host
from openflow.model import Placement, link_local

pytestmark = pytest.mark.rig

ATTACKER6, VICTIM6, EXT6 = "fd00:5::64", "fd00:5::65", "fd00:5::c8"
ALL_NODES, ALL_ROUTERS = "ff02::1", "ff02::2"
OVERRIDE, SOLICITED_OVERRIDE = 0x2000_0000, 0x6000_0000
SLL, TLL = 1, 2


@dataclass(frozen=True)
class Scene:
    pod: Host
    victim_mac: str
    ext: Host


@pytest.fixture
def scene(rig, segment) -> Iterator[Scene]:
    register(segment.controller, *segment.hosts.values())
    n1, n2 = segment.hosts["n1"], segment.hosts["n2"]
    mine, theirs = place(segment.controller, "n1", "attacker6"), place(segment.controller, "n2", "victim6")
    install_placements(rig, segment.bridge, (Placement(ATTACKER6, mine["mac"], n1.ofport, "default/attacker6"),
                                             Placement(VICTIM6, theirs["mac"], n2.ofport, "default/victim6")))
    with pod_namespace(rig, n1, "attacker6", ip=mine["ip"], mac=mine["mac"]) as pod:
        yield Scene(pod, theirs["mac"], segment.external)


# A frame: (destination MAC, IPv6 packet, VLAN tags) built for a scene.
Build = Callable[[Scene], tuple[str, bytes, tuple[tuple[int, int], ...]]]


def udp(source: str, *, tags: tuple[tuple[int, int], ...] = ()) -> Build:
    return lambda s: (s.ext.mac, frames.ipv6_udp(src=source, dst=EXT6, payload=b"hello"), tags)


def advertisement(target: str, *, mac: str | None = None, source: str | None = None) -> Build:
    """An unsolicited NA of `target` at `mac` (default: the pod's own) to all nodes."""
    body = lambda s: frames.nd_body(target=target, flags=OVERRIDE, option=(TLL, mac or s.pod.mac))  # noqa: E731
    return lambda s: (frames.multicast_mac(ALL_NODES),
                      frames.icmpv6(src=source or target, dst=ALL_NODES, kind=136, body=body(s)), ())


def solicitation(target: str, *, source: str = ATTACKER6, sll: Callable[[Scene], str] | None = None) -> Build:
    """An NS for `target` to its solicited-node group; from :: it carries no option (RFC 4861 §4.3)."""
    group, group_mac = frames.solicited_node(target)

    def build(s: Scene) -> tuple[str, bytes, tuple[tuple[int, int], ...]]:
        option = None if source == "::" else (SLL, sll(s) if sll else s.pod.mac)
        body = frames.nd_body(target=target, option=option)
        return group_mac, frames.icmpv6(src=source, dst=group, kind=135, body=body), ()
    return build


def router_advertisement(s: Scene) -> tuple[str, bytes, tuple[tuple[int, int], ...]]:
    """'I am your default router' (hop limit 64, lifetime 1800 s), with the pod's MAC."""
    body = struct.pack("!BBHII", 64, 0, 1800, 0, 0) + struct.pack("!BB", SLL, 1) + frames.mac_bytes(s.pod.mac)
    return frames.multicast_mac(ALL_NODES), frames.icmpv6(src=link_local(ATTACKER6), dst=ALL_NODES, kind=134,
                                                          body=body), ()


def router_solicitation(s: Scene) -> tuple[str, bytes, tuple[tuple[int, int], ...]]:
    body = bytes(4) + struct.pack("!BB", SLL, 1) + frames.mac_bytes(s.pod.mac)
    return frames.multicast_mac(ALL_ROUTERS), frames.icmpv6(src=link_local(ATTACKER6), dst=ALL_ROUTERS, kind=133,
                                                            body=body), ()


def redirect(s: Scene) -> tuple[str, bytes, tuple[tuple[int, int], ...]]:
    """'To reach the victim, go through me' (target: the pod, destination: the victim)."""
    body = bytes(4) + frames.nd_body(target=link_local(ATTACKER6))[4:] + frames.nd_body(target=VICTIM6)[4:]
    return s.ext.mac, frames.icmpv6(src=link_local(ATTACKER6), dst=EXT6, kind=137, body=body), ()


def echo_request(s: Scene) -> tuple[str, bytes, tuple[tuple[int, int], ...]]:
    return s.ext.mac, frames.icmpv6(src=link_local(ATTACKER6), dst=EXT6, kind=128, body=struct.pack("!HH", 7, 1)), ()


DOT1Q, QINQ, PRIORITY = (((frames.ETH_P_8021Q, 100),), ((frames.ETH_P_8021AD, 100), (frames.ETH_P_8021Q, 200)),
                         ((frames.ETH_P_8021Q, 0),))
ATTACKS: dict[str, tuple[Build, Build]] = {  # hostile, honest twin
    "source-of-another-pod": (udp(VICTIM6), udp(ATTACKER6)),
    "source-unplaced": (udp("fd00:5::99"), udp(ATTACKER6)),
    "link-local-of-another-pod": (udp(link_local(VICTIM6)), udp(link_local(ATTACKER6))),
    "link-local-eui64-style": (udp("fe80::ff:fe00:64"), udp(link_local(ATTACKER6))),
    "na-for-another-pods-address": (advertisement(VICTIM6, source=ATTACKER6), advertisement(ATTACKER6)),
    "na-as-another-pod": (advertisement(VICTIM6), advertisement(ATTACKER6)),
    "na-with-another-mac": (advertisement(ATTACKER6, mac="02:00:c6:12:05:99"), advertisement(ATTACKER6)),
    "ns-with-another-pods-sll": (solicitation(EXT6, sll=lambda s: s.victim_mac), solicitation(EXT6)),
    "ns-with-the-external-hosts-sll": (solicitation(EXT6, sll=lambda s: s.ext.mac), solicitation(EXT6)),
    "dad-for-another-pods-address": (solicitation(VICTIM6, source="::"), solicitation(ATTACKER6, source="::")),
    "router-advertisement": (router_advertisement, router_solicitation),
    "redirect": (redirect, echo_request),
    "dot1q-tagged": (udp(ATTACKER6, tags=DOT1Q), udp(ATTACKER6)),
    "qinq-tagged": (udp(ATTACKER6, tags=QINQ), udp(ATTACKER6)),
    "priority-tagged": (udp(ATTACKER6, tags=PRIORITY), udp(ATTACKER6)),
}


def sent(scene: Scene, build: Build) -> tuple[bytes, bytes]:
    """The frame from the pod's MAC, and its marker (after the IPv6 packet: Ethernet padding to
    every receiver, which goes by the payload length)."""
    mark = marker()
    dst, packet, tags = build(scene)
    return frames.ethernet(dst=dst, src=scene.pod.mac, ethertype=frames.ETH_P_IPV6, payload=packet + mark,
                           tags=tags), mark


@pytest.mark.parametrize(("hostile", "honest"), ATTACKS.values(), ids=ATTACKS.keys())
def test_spoofed_ipv6_from_a_pod_reaches_nobody_and_its_honest_twin_does(scene, hostile, honest):
    frame, mark = sent(scene, honest)
    assert arrives(scene.pod, frame, scene.ext, mark=mark), "the honest twin did not arrive"
    frame, mark = sent(scene, hostile)
    assert not arrives(scene.pod, frame, scene.ext, mark=mark), "the hostile frame arrived"
