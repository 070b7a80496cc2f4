"""The flows of one IPv6 placement: Neighbor Discovery answered by the switch, port security, RA guard.

The IPv6 counterpart of the ARP part of `openflow.pipeline` (which calls in here for a placement
whose `ip` is IPv6, and owns the tables, priorities and the shared l2 flow).

responder  A Neighbor Solicitation for the address from any port but its owner's becomes its
           Neighbor Advertisement in place: Ethernet and IPv6 source and destination swapped (the
           solicitor's to the destination, the placement's to the source), type 136, flags
           solicited|override, the source link-layer option turned into the target link-layer one;
           `nd_reply` then writes the MAC into that option and sends it out IN_PORT. Two tables,
           because Open vSwitch checks a set-field's prerequisites against the flow's match, not the
           packet being rewritten: `nd_tll` may only be written by a flow that matches an
           advertisement. Open vSwitch (2.12+) fixes up the ICMPv6 checksum as it rewrites; no
           datapath has an action for the flags and option type, so each answer is made by
           ovs-vswitchd itself (an upcall per solicitation, as for the first packet of a new flow),
           never by the controller.
           A solicitation from the owner's port passes (duplicate address detection), and so does one
           without a source link-layer option (DAD from elsewhere, a unicast one that left it out):
           its answer would have nowhere to carry the MAC.
ingress    From a node port, with the placement's MAC, untagged (or in its VLAN): IPv6 from the
           address or its link-local (`model.link_local`); its solicitations only with its own MAC
           as source link-layer address, its advertisements only for its own address (or
           link-local) with its own MAC or none; a DAD probe (source ::) only for its own address
           (or link-local); MLD reports and dones from :: (from the link-local they are plain traffic
           from it). Router Advertisements (a pod answering a Router Solicitation, or unasked) and
           Redirects are dropped (RA guard), and so is any other solicitation or advertisement:
           these flows sit above the plain allow of its source address.

Every match is written out in canonical form (`flows.FIELD_ORDER`) like the rest of
`placement_flows`; the flows that name only the placement's port and MAC (the guard) are shared by
placements with the same port and MAC (ipvlan pods of one node), as the l2 flow is.
"""

from __future__ import annotations

import ipaddress

from openflow import cookies
from openflow.cookies import Purpose
from openflow.flows import (ETH_TYPE_IPV6, IN_PORT, IPPROTO_ICMPV6, MLD2_REPORT, MLD_DONE, MLD_REPORT,
                            ND_OPT_TARGET_LL, NEIGHBOR_ADVERTISEMENT, NEIGHBOR_SOLICITATION, NO_MAC, REDIRECT,
                            ROUTER_ADVERTISEMENT, UNSPECIFIED_IPV6, Action, Flow, Match, Move, Output, SetField,
                            make_flow)
from openflow.model import link_local
from openflow.tables import INGRESS, L2, ND_REPLY, PRIO_ALLOW, PRIO_ANSWER, PRIO_SKIP_OWNER, RESPONDER

# ingress: above the plain allow of an address, so ND from it is checked, not just let through
PRIO_ND_ALLOW = PRIO_ALLOW + 10
PRIO_GUARD = PRIO_ALLOW + 5
PRIO_NO_SLL = 150  # responder: between skipping the owner and answering
PRIO_REPLY = 100

ND_FLAGS_SOLICITED_OVERRIDE = 0x6000_0000  # the first 32 bits after the checksum: R=0, S=1, O=1
NEIGHBOR_DISCOVERY = (NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT)
GUARDED = (ROUTER_ADVERTISEMENT, NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT, REDIRECT)
MLD_LISTENER = (MLD_REPORT, MLD_DONE, MLD2_REPORT)

_ICMPV6 = (("eth_type", ETH_TYPE_IPV6), ("ip_proto", IPPROTO_ICMPV6))


def is_ipv6(ip: str) -> bool:
    """Whether a placement's `ip` is IPv6 (the hot path's test: no parsing)."""
    return ":" in ip


def compressed(ip: str) -> str:
    """`ip` as flows carry it and Open vSwitch reports it."""
    return ipaddress.IPv6Address(ip).compressed


def icmpv6_match(kind: int) -> dict[str, int]:
    """The match of ICMPv6 messages of type `kind` (code 0: what ND messages carry, and what Open
    vSwitch requires before it matches their fields)."""
    return {**dict(_ICMPV6), "icmpv6_type": kind, "icmpv6_code": 0}


def responder_flows(ip: str, mac: str, port: int, tag: int) -> tuple[Flow, ...]:
    """Answer solicitations for `ip` (at `mac`) from every port but `port`."""
    solicitation = (*_ICMPV6, ("icmpv6_type", NEIGHBOR_SOLICITATION), ("icmpv6_code", 0), ("ipv6_nd_target", ip))
    owner = cookies.ip_owner(ip)
    answer = cookies.make(tag, Purpose.ND_RESPONDER, owner)
    return (
        Flow(RESPONDER, PRIO_SKIP_OWNER, (("in_port", port), *solicitation), goto=L2,
             cookie=cookies.make(tag, Purpose.OWNER_PASS, owner)),
        Flow(RESPONDER, PRIO_NO_SLL, (*solicitation, ("ipv6_nd_sll", NO_MAC)), goto=L2, cookie=answer),
        Flow(RESPONDER, PRIO_ANSWER, solicitation, actions=advertisement(ip, mac), goto=ND_REPLY, cookie=answer),
    )


def ingress_flows(ip: str, mac: str, source: Match, tag: int) -> tuple[Flow, ...]:
    """What a node port may send for `ip`: `source` is the port, MAC and VLAN it must come with.

    A flow that names an address is owned by that address (the link-local one too: ipvlan
    placements of one node may share it), one that names only the source by the MAC: every
    placement that shares a flow gives it the same cookie."""
    ipv6 = (*source, ("eth_type", ETH_TYPE_IPV6))
    icmp = (*ipv6, ("ip_proto", IPPROTO_ICMPV6))
    shared = cookies.mac_owner(mac)
    guard, mld = cookies.make(tag, Purpose.RA_GUARD, shared), cookies.make(tag, Purpose.PORT_SECURITY, shared)
    flows = [Flow(INGRESS, PRIO_GUARD, (*icmp, ("icmpv6_type", kind)), cookie=guard) for kind in GUARDED]
    for address in (ip, link_local(ip)):
        cookie = cookies.make(tag, Purpose.PORT_SECURITY, cookies.ip_owner(address))
        flows.append(Flow(INGRESS, PRIO_ALLOW, (*ipv6, ("ipv6_src", address)), goto=L2, cookie=cookie))
        flows.append(Flow(INGRESS, PRIO_ND_ALLOW, (
            *icmp, ("ipv6_src", address), ("icmpv6_type", NEIGHBOR_SOLICITATION), ("icmpv6_code", 0),
            ("ipv6_nd_sll", mac)), goto=RESPONDER, cookie=cookie))
        flows.append(Flow(INGRESS, PRIO_ND_ALLOW, (
            *icmp, ("ipv6_src", UNSPECIFIED_IPV6), ("icmpv6_type", NEIGHBOR_SOLICITATION), ("icmpv6_code", 0),
            ("ipv6_nd_target", address)), goto=RESPONDER, cookie=cookie))
        flows.extend(Flow(INGRESS, PRIO_ND_ALLOW, (
            *icmp, ("ipv6_src", address), ("icmpv6_type", NEIGHBOR_ADVERTISEMENT), ("icmpv6_code", 0),
            ("ipv6_nd_target", address), ("ipv6_nd_tll", tll)), goto=L2, cookie=cookie) for tll in (mac, NO_MAC))
    flows.extend(Flow(INGRESS, PRIO_ALLOW, (*icmp, ("ipv6_src", UNSPECIFIED_IPV6), ("icmpv6_type", kind)),
                      goto=L2, cookie=mld) for kind in MLD_LISTENER)
    return tuple(flows)


def advertisement(ip: str, mac: str) -> tuple[Action, ...]:
    """Turn a solicitation for `ip` into its advertisement in place, up to the target link-layer
    address, which `nd_reply` writes (see the module's docstring)."""
    return (_SOLICITOR_TO_DST_ETH, SetField("eth_src", mac), _SOLICITOR_TO_DST_IP, SetField("ipv6_src", ip),
            _TYPE_ADVERTISEMENT, _FLAGS, _OPTION_TARGET_LL)


def reply_flow(tag: int) -> Flow:
    """nd_reply: the advertisement's target link-layer address is its (new) Ethernet source; back."""
    return make_flow(ND_REPLY, PRIO_REPLY, icmpv6_match(NEIGHBOR_ADVERTISEMENT),
                     actions=(Move("eth_src", "ipv6_nd_tll", 48), Output(IN_PORT)),
                     cookie=cookies.make(tag, Purpose.PIPELINE))


# the parts of every advertisement that do not depend on the placement
_SOLICITOR_TO_DST_ETH = Move("eth_src", "eth_dst", 48)
_SOLICITOR_TO_DST_IP = Move("ipv6_src", "ipv6_dst", 128)
_TYPE_ADVERTISEMENT = SetField("icmpv6_type", NEIGHBOR_ADVERTISEMENT)
_FLAGS = SetField("nd_reserved", ND_FLAGS_SOLICITED_OVERRIDE)
_OPTION_TARGET_LL = SetField("nd_options_type", ND_OPT_TARGET_LL)
