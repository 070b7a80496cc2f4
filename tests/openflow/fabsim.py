"""A frame's walk across several switches (ofsim per switch, the links between them): where it is
delivered, and whether it would go round for ever. Test utility."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping

from ofsim import Frame, walk

from openflow.flows import Flow

Port = tuple[int, int]  # (dpid, port)


def cables(*pairs: tuple[Port, Port]) -> dict[Port, Port]:
    """Both directions of each link."""
    return {**{a: b for a, b in pairs}, **{b: a for a, b in pairs}}


def spread(switches: Mapping[int, frozenset[Flow]], links: Mapping[Port, Port], frame: Frame, *, at: Port,
           limit: int = 100) -> Counter[Port]:
    """Every (dpid, port) off the fabric a frame injected at `at` leaves by, with how many copies.
    More than `limit` hops in all means a loop: the walk fails, as a storm would fill the links."""
    delivered: Counter[Port] = Counter()
    queue = deque([(at, frame)])
    hops = 0
    while queue:
        (dpid, port), current = queue.popleft()
        hops += 1
        assert hops <= limit, f"a loop: more than {limit} hops, last at switch {dpid:#x} port {port}"
        for emitted in walk(switches[dpid], current, in_port=port).emitted:
            assert isinstance(emitted.port, int), f"switch {dpid:#x} sent it to {emitted.port}"
            out = (dpid, emitted.port)
            if out in links:
                queue.append((links[out], emitted.frame))
            else:
                delivered[out] += 1
    return delivered
