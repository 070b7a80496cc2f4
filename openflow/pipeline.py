"""The pipeline: a `SwitchState` → the exact set of flows the switch should hold.

Five tables (see `openflow.tables`): ingress, responder and l2 walked in order, `nd_reply` only by
the advertisements the responder makes, and `seen`, which no packet walks (IPv6 rows: openflow.ipv6):

ingress    per placement on a node port, untagged (or in its VLAN), with its MAC:
           IPv6: its NS with its MAC as sll, DAD (::) for its own address
           or link-local → responder; its NA for its own address (or
           link-local) with its MAC or no tll → l2                            prio 210
           IPv6: any other RA, NS, NA, Redirect (RA guard) → drop             prio 205
           ARP with its sender MAC and IP (or an RFC 5227 probe for its IP)
           → responder; IPv4 from its IP → l2; IPv6 from its address or
           link-local (`model.link_local`), MLD from :: → l2                  prio 200
           ARP (NS, NA) from a trusted port → record (in_port, eth_src) and
           (in_port, arp_spa) ((in_port, ipv6_src)) in seen; responder      prio 101
           trusted port → record (in_port, eth_src) in seen; responder      prio 100
           learn MAC, untagged, from any other port → CONTROLLER (truncated) prio 90
           anything else → drop                                              prio 0
responder  ARP broadcast request or NS for a placed IP from its owner's port
           → l2 (DAD, gratuitous ARP pass on unanswered)                    prio 200
           NS for a placed IPv6 address without a source link-layer option
           (DAD from elsewhere) → l2                                         prio 150
           ARP broadcast request for a placed IP → rewritten into the reply,
           out IN_PORT (answered, not flooded); NS (multicast or unicast)
           for a placed IPv6 address → rewritten into its NA → nd_reply      prio 100
           anything else → l2                                                prio 0
l2         placed MAC → its port                                             prio 100
           broadcast/multicast → NORMAL                                      prio 50
           anything else → NORMAL or drop (`SwitchState.unknown_destination`) prio 0
           (on a switch with inter-switch ports, no NORMAL: per-in-port flood
           flows along the fabric's tree instead, see openflow.fabric)
seen       (in_port, eth_src) of every frame, (in_port, arp_spa) of every ARP and
           (in_port, ipv6_src) of every NS and NA from a trusted port, learned
           by the switch itself (cookie `seen_cookie`, expiring SEEN_TIMEOUT
           after the last such frame)
nd_reply   NA from the responder: its MAC into the target link-layer option,
           out IN_PORT                                                       prio 100

Every flow's cookie (openflow.cookies) carries the controller's tag, why the flow exists and whose
it is; `openflow.explain` turns an `ovs-ofctl dump-flows` back into these names, and the rig names
the tables in Open vSwitch (`tables.vsctl_name_tables`: `table=ingress` with `--names`):

table (id)     flows                                                purpose        owner
ingress (0)    a placement's allow flows (ARP, IPv4, IPv6 and ND    port_security  its IP (the link-local
               of its own address or link-local)                                   flows: that address)
               MLD from ::                                          port_security  its MAC
               RA, NS, NA, Redirect guard                           ra_guard       its MAC
               a trusted port's flows                               trusted        the port
               a learn MAC → CONTROLLER                             learn          the MAC
               the miss                                             pipeline       -
responder (1)  a request from the owner's port passes               owner_pass     its IP
               ARP request answered                                 arp_responder  its IP
               NS answered, NS without a source link-layer passes   nd_responder   its IP
               the miss                                             pipeline       -
l2 (2)         placed MAC → its port                                forward        the MAC
               broadcast/multicast, the miss                        pipeline       -
seen (3)       the switch's own records (under `cookies.seen_tag`:  seen           -
               never read as ours, and ignored by `diff` anyway)
nd_reply (4)   the advertisement out IN_PORT                        pipeline       -

A flow that placements share (ipvlan pods at their node's MAC) is owned by what it names, the MAC or
the address, so every placement gives it the same cookie. Cookies are pure functions of the flow:
a restart computes the same ones (zero flow-mods), and a switch holding an older version's flows
under the bare configured cookie is converged once, each flow replaced in place by an add.

`seen` is what "the switch has seen this MAC (or IP)" means when a pod asks for a MAC or a node
registers (controller.identity): the switch records the sources on trusted ports (routers, external
hosts, inter-switch links) itself, and the controller reads the table (flow stats for one eth_src,
arp_spa or ipv6_src) only on those rare paths; no controller learning, no packet-in per host. The
cost is the switch's, per new source behind a trusted port (an upcall and a megaflow of its own:
~50 µs of ovs-vswitchd CPU here, tests/bench/bench_seen.py), nothing per packet after that. (Source
IPs of IP packets are not recorded: a router forwards the world's; ARP and ND senders are on the link.)

Port security matches the tag too (`vlan_vid`): a node port's frames are untagged, so an 802.1Q,
802.1ad (QinQ) or priority-tagged frame from a pod matches no allow flow, whatever MAC and IP it
carries, and is dropped; otherwise NORMAL would carry it into that VLAN on every trunk port.

Every placement-specific flow names that placement's IP or MAC and no one else's, so adding, removing
or moving one placement changes only its own flows (ipvlan placements, sharing the node's MAC on
one port, share one l2 flow and the IPv6 guard flows: the set dedupes them).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

from openflow.flows import (ARP_REPLY, ARP_REQUEST, BROADCAST, CONTROLLER, ETH_TYPE_ARP, ETH_TYPE_IP,
                            ETH_TYPE_IPV6, IN_PORT, MULTICAST, NORMAL, OFPVID_NONE, OFPVID_PRESENT, Action, Flow,
                            Learn, Move, Output, SetField, make_flow)
from openflow import cookies, ipv6
from openflow.cookies import Purpose
from openflow.fabric import fabric_flows, is_fabric
from openflow.model import Placement, PortRole, SwitchState, UnknownDestination
from openflow.tables import INGRESS, L2, PRIO_ALLOW, PRIO_ANSWER, PRIO_SKIP_OWNER, RESPONDER, SEEN

PRIO_TRUSTED_ARP = 101
PRIO_TRUSTED = 100
PRIO_LEARN = 90  # below trusted ports: a node's MAC on a trusted port is forwarded, never diverted
PRIO_EXACT = 100
PRIO_MULTICAST = 50
PRIO_MISS = 0

LEARN_MAX_LEN = 128  # bytes of a learning frame the controller needs: the Ethernet header and a bit
SEEN_TIMEOUT = 300  # seconds a source MAC stays seen after its last frame: Open vSwitch's own MAC aging
NX_LEARN_F_DELETE_LEARNED = 2  # a trusted port's records go with its flow (the port is no longer trusted)


def seen_cookie(cookie: int) -> int:
    """The cookie of the switch-learned `seen` flows: under another tag than the controller's
    (`cookies.seen_tag`), so reconciliation (which reads and deletes only flows carrying the
    controller's tag) leaves them alone."""
    return cookies.make(cookies.seen_tag(cookie), Purpose.SEEN)


class StateError(ValueError):
    """The state cannot be turned into flows (e.g. one IP placed twice): the controller's bug."""


def desired_flows(state: SwitchState) -> frozenset[Flow]:
    """All flows for `state`, each with a cookie under the controller's tag that names its purpose
    and owner (openflow.cookies).

    The controller calls this on every convergence, with thousands of placements of which one or
    two changed: each placement's flows are built once and reused (`placement_flows` is cached), so
    a call costs a set union, and an unchanged flow is the very same object as last time, which
    makes the diff against what the switch holds an identity check."""
    _check(state)
    trusted = _trusted(state)
    flows = set(_fixed_flows(state))
    flows.update(fabric_flows(state))
    for placement in state.placements:
        flows.update(placement_flows(placement, placement.port in trusted, state.cookie))
    return frozenset(flows)


class DesiredFlows:
    """`desired_flows(state)` kept up to date across the successive states of one switch.

    The controller converges after (batches of) pod ADDs on switches holding thousands of
    placements; rebuilding the whole set each time made it quadratic. `update` costs a set
    difference over the placements plus work for the few that changed; a change of ports, learn
    MACs, cookie or miss policy (rare) rebuilds everything. Flows shared by placements (ipvlan pods
    share their node's l2 flow) are counted, so one leaving does not take the flow from the others.
    """

    def __init__(self) -> None:
        self._state: SwitchState | None = None
        self._placements: frozenset[Placement] = frozenset()
        self._counts: Counter[Flow] = Counter()
        self._by_ip: dict[str, Placement] = {}
        self._by_mac: dict[str, tuple[int, int]] = {}  # mac -> (port, number of placements)

    @property
    def flows(self) -> frozenset[Flow]:
        return frozenset(self._counts)

    def update(self, state: SwitchState) -> tuple[frozenset[Flow], frozenset[Flow]]:
        """Move to `state`; return (flows that appeared, flows that disappeared)."""
        old = self._state
        self._state = None  # until this update completes: a StateError leaves a full rebuild next
        if old is None or _fixed_part(old) != _fixed_part(state):
            before = frozenset(self._counts)
            self._rebuild(state)
            self._placements = _as_set(state.placements)
            after = frozenset(self._counts)
            self._state = state
            return after - before, before - after
        current = _as_set(state.placements)
        gone, new = self._placements - current, current - self._placements
        trusted = _trusted(state)
        touched = {f for p in gone | new for f in placement_flows(p, p.port in trusted, state.cookie)}
        had = {f for f in touched if f in self._counts}
        for placement in gone:
            self._remove(placement, trusted, state.cookie)
        for placement in new:
            self._add(placement, trusted, state.cookie)
        self._state = state
        self._placements = current
        has = {f for f in touched if f in self._counts}
        return frozenset(has - had), frozenset(had - has)

    def _rebuild(self, state: SwitchState) -> None:
        trusted = _trusted(state)
        self._counts = Counter(_fixed_flows(state))
        self._counts.update(fabric_flows(state))
        self._by_ip, self._by_mac = {}, {}
        for placement in state.placements:
            self._add(placement, trusted, state.cookie)

    def _add(self, placement: Placement, trusted: frozenset[int], cookie: int) -> None:
        _check_placement(placement)
        mac = placement.mac.lower()
        other = self._by_ip.get(placement.ip)
        if other is not None and (other.mac.lower(), other.port) != (mac, placement.port):
            raise _clash(placement, other, placement.ip)
        port, count = self._by_mac.get(mac, (placement.port, 0))
        if port != placement.port:
            raise _clash(placement, self._by_ip_of_mac(mac), mac)
        self._by_ip[placement.ip] = placement
        self._by_mac[mac] = (port, count + 1)
        self._counts.update(placement_flows(placement, placement.port in trusted, cookie))

    def _remove(self, placement: Placement, trusted: frozenset[int], cookie: int) -> None:
        mac = placement.mac.lower()
        self._by_ip.pop(placement.ip, None)
        port, count = self._by_mac[mac]
        if count > 1:
            self._by_mac[mac] = (port, count - 1)
        else:
            del self._by_mac[mac]
        flows = placement_flows(placement, placement.port in trusted, cookie)
        self._counts.subtract(flows)
        for flow in flows:
            if self._counts[flow] <= 0:
                del self._counts[flow]

    def _by_ip_of_mac(self, mac: str) -> Placement:
        return next(p for p in self._by_ip.values() if p.mac.lower() == mac)


def _as_set(placements: tuple[Placement, ...] | frozenset[Placement]) -> frozenset[Placement]:
    return placements if isinstance(placements, frozenset) else frozenset(placements)


def _fixed_part(state: SwitchState) -> tuple[object, ...]:
    roles = tuple((port.number, port.role) for port in state.ports)  # SwitchPort compares numbers only
    return (state.cookie, roles, state.learn_macs, state.unknown_destination, state.tree_links)


def _trusted(state: SwitchState) -> frozenset[int]:
    """The ports whose placements get no port security (the edge is elsewhere): trusted and link ports."""
    return frozenset(port.number for port in state.ports if port.role in _UNCHECKED)


_UNCHECKED = (PortRole.TRUSTED, PortRole.LINK)


def _fixed_flows(state: SwitchState) -> Iterator[Flow]:
    """The flows that name no placement: table defaults (purpose pipeline), learn MACs (owned by
    the MAC), trusted ports (owned by the port). A fabric's link and flood flows: openflow.fabric."""
    tag = state.cookie
    yield from _table_defaults(state.unknown_destination, tag, fabric=is_fabric(state))
    for mac in state.learn_macs:
        yield make_flow(INGRESS, PRIO_LEARN, {"eth_src": mac, "vlan_vid": OFPVID_NONE},
                        actions=(Output(CONTROLLER, LEARN_MAX_LEN),),
                        cookie=cookies.make(tag, Purpose.LEARN, cookies.mac_owner(mac)))
    seen_mac, seen_ip, seen_ip6 = _seen_records(state.cookie)
    for number in sorted(port.number for port in state.ports if port.role is PortRole.TRUSTED):
        cookie = cookies.make(tag, Purpose.TRUSTED, cookies.port_owner(number))
        yield make_flow(INGRESS, PRIO_TRUSTED_ARP, {"in_port": number, "eth_type": ETH_TYPE_ARP},
                        actions=(seen_mac, seen_ip), goto=RESPONDER, cookie=cookie)
        for kind in ipv6.NEIGHBOR_DISCOVERY:
            yield make_flow(INGRESS, PRIO_TRUSTED_ARP, {"in_port": number, **ipv6.icmpv6_match(kind)},
                            actions=(seen_mac, seen_ip6), goto=RESPONDER, cookie=cookie)
        yield make_flow(INGRESS, PRIO_TRUSTED, {"in_port": number}, actions=(seen_mac,), goto=RESPONDER,
                        cookie=cookie)


def _seen_records(cookie: int) -> tuple[Learn, Learn, Learn]:
    """The learn actions that record a trusted port's source MACs, its ARP senders' IPs and its
    ND senders' IPv6 addresses."""
    cookie = seen_cookie(cookie)
    return (Learn(SEEN, ("in_port", "eth_src"), cookie, SEEN_TIMEOUT, flags=NX_LEARN_F_DELETE_LEARNED),
            Learn(SEEN, ("in_port", "arp_spa"), cookie, SEEN_TIMEOUT, values=(("eth_type", ETH_TYPE_ARP),),
                  flags=NX_LEARN_F_DELETE_LEARNED),
            Learn(SEEN, ("in_port", "ipv6_src"), cookie, SEEN_TIMEOUT, values=(("eth_type", ETH_TYPE_IPV6),),
                  flags=NX_LEARN_F_DELETE_LEARNED))


@functools.lru_cache(maxsize=1 << 17)
def placement_flows(placement: Placement, on_trusted_port: bool, tag: int) -> tuple[Flow, ...]:
    """Every flow that exists for this one placement (and names only it), under the controller's
    `tag`: a flow naming the IP is owned by the IP, one naming only the MAC (shared by the ipvlan
    placements of a node) by the MAC, so every placement that shares a flow gives it one cookie.

    The hot path of an allocation: the matches are written out in their canonical form (field
    order of `flows.FIELD_ORDER`, lower-case MACs) instead of going through `make_match`;
    tests/openflow/test_desired_flows.py checks that each equals what `make_match` makes."""
    port, mac, ip = placement.port, placement.mac.lower(), placement.ip
    # l2: frames for its MAC go to its port
    forward = Flow(L2, PRIO_EXACT, (("eth_dst", mac),), actions=(Output(port),),
                   cookie=cookies.make(tag, Purpose.FORWARD, cookies.mac_owner(mac)))
    source = (("in_port", port), ("eth_src", mac), ("vlan_vid", vlan_vid(placement.vlan)))
    if ipv6.is_ipv6(ip):
        answer = ipv6.responder_flows(ip, mac, port, tag)
        return (*answer, forward) if on_trusted_port else (*ipv6.ingress_flows(ip, mac, source, tag), *answer,
                                                            forward)
    owner = cookies.ip_owner(ip)
    request = (("eth_dst", BROADCAST), ("eth_type", ETH_TYPE_ARP), ("arp_op", ARP_REQUEST), ("arp_tpa", ip))
    flows = (
        # responder: a request from the owner's port passes (DAD, gratuitous); others are answered
        Flow(RESPONDER, PRIO_SKIP_OWNER, (("in_port", port), *request), goto=L2,
             cookie=cookies.make(tag, Purpose.OWNER_PASS, owner)),
        Flow(RESPONDER, PRIO_ANSWER, request, actions=arp_reply(placement),
             cookie=cookies.make(tag, Purpose.ARP_RESPONDER, owner)),
        forward,
    )
    if on_trusted_port:
        return flows
    arp = (*source, ("eth_type", ETH_TYPE_ARP))
    cookie = cookies.make(tag, Purpose.PORT_SECURITY, owner)
    return (
        # ingress: what a node port may send for it: its ARP (or an RFC 5227 probe for its IP), its IPv4
        Flow(INGRESS, PRIO_ALLOW, (*arp, ("arp_spa", ip), ("arp_sha", mac)), goto=RESPONDER, cookie=cookie),
        Flow(INGRESS, PRIO_ALLOW, (*arp, ("arp_spa", "0.0.0.0"), ("arp_sha", mac), ("arp_tpa", ip)),
             goto=RESPONDER, cookie=cookie),
        Flow(INGRESS, PRIO_ALLOW, (*source, ("eth_type", ETH_TYPE_IP), ("ipv4_src", ip)), goto=L2, cookie=cookie),
        *flows,
    )


def vlan_vid(vlan: int | None) -> int:
    """The OpenFlow 1.3 `vlan_vid` a placement's frames must carry: OFPVID_NONE (no tag at all, so
    not a priority tag either) for an untagged placement, OFPVID_PRESENT | VID for one in a VLAN."""
    return OFPVID_NONE if vlan is None else OFPVID_PRESENT | vlan


def _table_defaults(unknown: UnknownDestination, tag: int, *, fabric: bool) -> Iterator[Flow]:
    """A fabric switch floods with explicit flows along the tree (openflow.fabric), never NORMAL."""
    cookie = cookies.make(tag, Purpose.PIPELINE)
    yield make_flow(INGRESS, PRIO_MISS, {}, cookie=cookie)  # the explicit drop
    yield make_flow(RESPONDER, PRIO_MISS, {}, goto=L2, cookie=cookie)
    if not fabric:
        yield make_flow(L2, PRIO_MULTICAST, {"eth_dst": MULTICAST}, actions=(Output(NORMAL),), cookie=cookie)
    miss = (Output(NORMAL),) if unknown is UnknownDestination.NORMAL and not fabric else ()
    yield make_flow(L2, PRIO_MISS, {}, actions=miss, cookie=cookie)
    yield ipv6.reply_flow(tag)


def arp_reply(placement: Placement) -> tuple[Action, ...]:
    """Turn the request into its reply in place (the Neutron/OVN recipe) and send it back."""
    mac = placement.mac.lower()
    return (
        _SENDER_TO_TARGET_ETH, SetField("eth_src", mac), _OP_REPLY,
        _SENDER_TO_TARGET_HA, SetField("arp_sha", mac),
        _SENDER_TO_TARGET_PA, SetField("arp_spa", placement.ip),
        _BACK_IN,
    )  # fmt: skip


# the parts of every reply that do not depend on the placement
_SENDER_TO_TARGET_ETH = Move("eth_src", "eth_dst", 48)
_OP_REPLY = SetField("arp_op", ARP_REPLY)
_SENDER_TO_TARGET_HA = Move("arp_sha", "arp_tha", 48)
_SENDER_TO_TARGET_PA = Move("arp_spa", "arp_tpa", 32)
_BACK_IN = Output(IN_PORT)


def _check(state: SwitchState) -> None:
    """Reject states whose flows would contradict each other: one IP answered with two MACs or
    ports, one MAC forwarded to two ports."""
    by_ip: dict[str, Placement] = {}
    by_mac: dict[str, Placement] = {}
    for placement in state.placements:
        _check_placement(placement)
        mac = placement.mac.lower()
        other = by_ip.setdefault(placement.ip, placement)
        if (other.mac.lower(), other.port) != (mac, placement.port):
            raise _clash(placement, other, placement.ip)
        other = by_mac.setdefault(mac, placement)
        if other.port != placement.port:
            raise _clash(placement, other, mac)


def _check_placement(placement: Placement) -> None:
    """What a placement alone must be: a VID in range; an IPv6 address in compressed form (the form
    the clash checks compare and Open vSwitch reports back)."""
    if ipv6.is_ipv6(placement.ip) and _not_compressed(placement.ip):
        raise StateError(f"{placement.owner or placement.ip}: {placement.ip} is not an IPv6 address in "
                         "compressed form")
    if placement.vlan is not None and not 0 < placement.vlan < 4095:
        raise StateError(f"{placement.owner or placement.ip}: VLAN {placement.vlan} is not a VID (1-4094)")


def _not_compressed(ip: str) -> bool:
    try:
        return ipv6.compressed(ip) != ip
    except ValueError:
        return True


def _clash(placement: Placement, other: Placement, what: str) -> StateError:
    """The same message whichever of the two the walk met first (set order varies from call to call):
    the switch worker logs a failure once per distinct message."""
    placement, other = sorted((placement, other), key=lambda p: (p.owner or p.ip, p.ip, p.port))
    return StateError(f"{placement.owner or placement.ip}: {what} is already placed by "
                      f"{other.owner or other.ip} at {other.mac} on port {other.port}")
