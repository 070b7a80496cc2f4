"""The fabric's graph: switches and the links between them → how each switch forwards (pure).

`compute(switches, links_up)` is called again whenever a link goes up or down (controller/links.py
watches them) and gives a `Forwarding`:

- a loop-free tree for broadcast and unknown traffic: per connected part of the graph, breadth first
  from its lowest dpid, neighbours taken in (dpid, port) order, so the same graph always gives the same
  tree (a controller restart changes no flow);
- a next-hop port per (switch, destination switch) along a shortest path. Each hop's choice is made
  from the destination's distances (the neighbour one hop closer, lowest (dpid, port) first), so the
  hops agree with each other: following `next_port` from any switch reaches the destination, never
  a switch twice. Two links between the same two switches are fine: the lower port is used.

A partition is not an error: switches in another part are unreachable (`next_port` is None), and each
part has its own tree. Like faucet's stacking (a tree over stack links, recomputed on failure), but
known destinations take shortest paths, not the tree: every placement is known before its first
packet, so nothing needs to be learned by flooding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class LinkEnd:
    """One end of an inter-switch link: a port of a switch."""

    dpid: int
    port: int

    def __str__(self) -> str:
        return f"{self.dpid:#x}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> LinkEnd:
        """`"0x1:5"` (or `"1:5"`): the config's form. Raises ValueError."""
        dpid, sep, port = text.partition(":")
        if not sep or not dpid.strip() or not port.strip():
            raise ValueError(f"{text!r} is not \"dpid:port\" (e.g. \"0x1:5\")")
        return cls(int(dpid.strip(), 0), int(port.strip(), 10))


@dataclass(frozen=True, order=True)
class Link:
    """A cable between two switch ports. Its ends are kept in order (`a` < `b`), so a link is the
    same value whichever end the config or a frame names first."""

    a: LinkEnd
    b: LinkEnd

    def __post_init__(self) -> None:
        if self.b < self.a:
            a, b = self.b, self.a
            object.__setattr__(self, "a", a)
            object.__setattr__(self, "b", b)

    def __str__(self) -> str:
        return f"{self.a}-{self.b}"

    @property
    def ends(self) -> tuple[LinkEnd, LinkEnd]:
        return (self.a, self.b)

    def far(self, end: LinkEnd) -> LinkEnd:
        """The other end of the link from `end` (one of its ends)."""
        if end == self.a:
            return self.b
        if end == self.b:
            return self.a
        raise ValueError(f"{end} is not an end of link {self}")

    def end_on(self, dpid: int) -> LinkEnd:
        return self.a if self.a.dpid == dpid else self.b


@dataclass(frozen=True)
class Forwarding:
    """How every switch forwards over the links that are up. Compare two with `==`: equal values
    mean no flow changes anywhere."""

    switches: frozenset[int]
    links: frozenset[Link]  # configured
    up: frozenset[Link]  # used for forwarding (up and confirmed)
    tree: frozenset[Link]  # the loop-free subset of `up` that broadcasts follow
    hops: tuple[tuple[int, int, int], ...]  # (at, toward, port), sorted
    _hops: Mapping[tuple[int, int], int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hops", {(at, toward): port for at, toward, port in self.hops})

    def next_port(self, at: int, toward: int) -> int | None:
        """The port of switch `at` on the shortest path to switch `toward`; None when `toward` is
        `at` itself or unreachable from it."""
        return self._hops.get((at, toward))

    def tree_ports(self, dpid: int) -> frozenset[int]:
        """Ports of `dpid` on links of the tree: where its broadcasts go (besides its edge ports)."""
        return _ports_on(self.tree, dpid)

    def link_ports(self, dpid: int) -> frozenset[int]:
        """All configured link ports of `dpid`, whether up or not."""
        return _ports_on(self.links, dpid)

    def reachable(self, at: int) -> frozenset[int]:
        """The switches `at` can forward to, itself included (its part of a partitioned fabric)."""
        return frozenset({at} | {toward for (where, toward) in self._hops if where == at})

    def path(self, at: int, toward: int) -> tuple[int, ...]:
        """The switches a frame crosses from `at` to `toward`, both included; () when unreachable."""
        hops = [at]
        while hops[-1] != toward:
            port = self.next_port(hops[-1], toward)
            if port is None:
                return ()
            hops.append(_far_dpid(self.up, LinkEnd(hops[-1], port)))
        return tuple(hops)


def compute(switches: Iterable[int], links_up: Iterable[Link], *, configured: Iterable[Link] | None = None
            ) -> Forwarding:
    """The forwarding over `links_up` (links to a switch not in `switches` are ignored).
    `configured` (default: `links_up`) is every link the config names, for `link_ports`."""
    nodes = frozenset(switches)
    up = frozenset(link for link in links_up if link.a.dpid in nodes and link.b.dpid in nodes
                   and link.a.dpid != link.b.dpid)
    links = frozenset(configured) if configured is not None else up
    adjacency = _adjacency(nodes, up)
    return Forwarding(switches=nodes, links=links | up, up=up, tree=_tree(nodes, adjacency),
                      hops=tuple(sorted(_hops(nodes, adjacency))))


Adjacency = Mapping[int, tuple[tuple[int, int, Link], ...]]  # dpid -> ((neighbour, local port, link), ...)


def _adjacency(nodes: frozenset[int], up: frozenset[Link]) -> Adjacency:
    """Each switch's neighbours in (neighbour dpid, local port) order: the order every tie is broken in."""
    near: dict[int, list[tuple[int, int, Link]]] = {dpid: [] for dpid in nodes}
    for link in up:
        near[link.a.dpid].append((link.b.dpid, link.a.port, link))
        near[link.b.dpid].append((link.a.dpid, link.b.port, link))
    return {dpid: tuple(sorted(edges, key=lambda edge: edge[:2])) for dpid, edges in near.items()}


def _tree(nodes: frozenset[int], adjacency: Adjacency) -> frozenset[Link]:
    """A spanning tree of every connected part, breadth first from the part's lowest dpid."""
    visited: set[int] = set()
    tree: set[Link] = set()
    for root in sorted(nodes):
        if root in visited:
            continue
        visited.add(root)
        queue = deque([root])
        while queue:
            for neighbour, _, link in adjacency[queue.popleft()]:
                if neighbour not in visited:
                    visited.add(neighbour)
                    tree.add(link)
                    queue.append(neighbour)
    return frozenset(tree)


def _distances(source: int, adjacency: Adjacency) -> dict[int, int]:
    """Hops from `source` to every switch in its part."""
    distance = {source: 0}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        for neighbour, _, _ in adjacency[here]:
            if neighbour not in distance:
                distance[neighbour] = distance[here] + 1
                queue.append(neighbour)
    return distance


def _hops(nodes: frozenset[int], adjacency: Adjacency) -> Iterable[tuple[int, int, int]]:
    """(at, toward, port) for every pair in one part: per destination, each switch's first
    (dpid, port) neighbour one hop closer to it."""
    for toward in sorted(nodes):
        distance = _distances(toward, adjacency)
        for at, hops in distance.items():
            if at == toward:
                continue
            yield at, toward, next(port for neighbour, port, _ in adjacency[at]
                                   if distance.get(neighbour) == hops - 1)


def _ports_on(links: Iterable[Link], dpid: int) -> frozenset[int]:
    return frozenset(end.port for link in links for end in link.ends if end.dpid == dpid)


def _far_dpid(links: Iterable[Link], end: LinkEnd) -> int:
    return next(link.far(end).dpid for link in links if end in link.ends)
