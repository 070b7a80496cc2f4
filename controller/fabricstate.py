"""Every switch's share of the fabric: its link ports, its tree, and the other switches' placements
re-pointed at its next-hop port towards them ("remote placements").

Pure and in memory; `Service.desired_state` asks it under the service's lock. Each switch's own
placements come from the service's per-switch index; this keeps, per (switch, port), the same set
re-pointed at `port`, updated as placements come and go, so a switch's desired state costs a union of
sets (C speed, stored hashes reused) and never a walk over every pod of the fabric in Python.
A topology change (a new `Forwarding`) only changes which (switch, port) sets each switch takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controller import topology
from controller.topology import Forwarding
from openflow.model import Placement


class RemotePlacements:
    """Placements of each switch, as seen from the others: behind one of their link ports."""

    def __init__(self, forwarding: Forwarding) -> None:
        self.forwarding = forwarding
        self._via: dict[int, dict[int, set[Placement]]] = {}  # origin dpid -> port -> re-pointed placements

    @property
    def active(self) -> bool:
        """Whether there is a fabric at all (configured links): without one, nothing here applies."""
        return bool(self.forwarding.links)

    def set_forwarding(self, forwarding: Forwarding) -> bool:
        """Take a new topology; False if it is the same. The re-pointed sets of (switch, port) pairs
        still used are kept (a link that flaps costs nothing to rebuild), the others go."""
        if forwarding == self.forwarding:
            return False
        self.forwarding = forwarding
        used = {(toward, port) for _, toward, port in forwarding.hops}
        for origin, via in self._via.items():
            for port in [port for port in via if (origin, port) not in used]:
                del via[port]
        return True

    def added(self, dpid: int, placement: Placement) -> None:
        for port, placements in self._via.get(dpid, {}).items():
            placements.add(replace(placement, port=port))

    def removed(self, dpid: int, placement: Placement) -> None:
        for port, placements in self._via.get(dpid, {}).items():
            placements.discard(replace(placement, port=port))

    def on(self, dpid: int, local: dict[int, set[Placement]]) -> list[set[Placement]]:
        """The sets of remote placements switch `dpid` holds: every other switch's (in `local`, each
        switch's own placements) it can reach, behind its next-hop port towards that switch."""
        sets = []
        for origin, placements in local.items():
            port = self.forwarding.next_port(dpid, origin)
            if port is None or not placements:
                continue
            via = self._via.setdefault(origin, {})
            if port not in via:
                via[port] = {replace(placement, port=port) for placement in placements}
            sets.append(via[port])
        return sets

    def peers(self, dpids: Iterable[int]) -> set[int]:
        """The switches whose remote placements change with those of `dpids`: all that reach them."""
        if not self.active:
            return set()
        return {peer for dpid in dpids for peer in self.forwarding.reachable(dpid)} - set(dpids)


def from_config(switches: Iterable[int], links: Iterable[topology.Link]) -> Forwarding:
    """The forwarding before anything was observed: every configured link taken as up."""
    links = tuple(links)
    return topology.compute(switches, links, configured=links)
