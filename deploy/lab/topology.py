"""The lab's fabric as a shape (pure): which switches, their pinned dpids, the cables between them
with the port at each end, and which switch each node and the external host hang off.

`underlay-lab up --topology` names one of three shapes:

- `single` (the default): today's one switch, bridge `<prefix>-sw`, dpid 1, no links; the lab and
  the controller's config are exactly what they were before fabrics existed.
- `leaf-spine`: two spines (dpids 0x1, 0x2) and three leaves (0x11, 0x12, 0x13), every leaf cabled
  to every spine. Nodes alternate between leaf1 and leaf2; the external host has leaf3 (a border
  leaf) to itself, so losing a whole spine leaves every pod and the external host reachable, and a
  frame from the external host to a pod always crosses a spine. Spines have the lowest dpids, so the
  controller's loop-free tree (breadth first from the lowest dpid) is rooted at spine1.
- `line:N`: N switches s1..sN (dpids 1..N) in a row, each cabled to the next; the external host on
  s1, the nodes spread from s1 to sN (the first node on s1, the last on sN), so some path crosses
  every cable.

Link ports are numbered per switch from 1, in cable order (leaf1:1 goes to spine1, leaf1:2 to
spine2). The rig numbers host ports from one counter shared by all bridges, started above the
highest link port (`first_host_port`), so a host port never meets a link port on any bridge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SINGLE, LEAF_SPINE, LINE = "single", "leaf-spine", "line"
MAX_LINE = 8  # every bridge is one more userspace datapath polling on this shared 2-core machine
SPINES = (("spine1", 0x1), ("spine2", 0x2))
LEAVES = (("leaf1", 0x11), ("leaf2", 0x12), ("leaf3", 0x13))
BORDER = "leaf3"  # the external host's leaf: no nodes on it


class TopologyError(ValueError):
    """A topology or switch name the lab does not have; the message says which it has."""


@dataclass(frozen=True, order=True)
class End:
    """One end of a cable: port `port` of switch `switch` (by name)."""

    switch: str
    port: int

    def __str__(self) -> str:
        return f"{self.switch}:{self.port}"


@dataclass(frozen=True)
class Cable:
    """A veth pair between two bridges, `index` its place in the fabric's cable list."""

    index: int
    a: End
    b: End

    def joins(self, one: str, other: str) -> bool:
        return {self.a.switch, self.b.switch} == {one, other}

    def veth_names(self, prefix: str) -> tuple[str, str]:
        """The two veth ends' names (`<prefix>l<index>a`, `...b`): at most 15 characters."""
        return f"{prefix}l{self.index}a", f"{prefix}l{self.index}b"


@dataclass(frozen=True)
class Switch:
    name: str
    dpid: int

    def bridge(self, prefix: str, *, single: bool) -> str:
        """The OVS bridge: `<prefix>-sw` for the single switch (as before fabrics), else `<prefix>-<name>`."""
        return f"{prefix}-sw" if single else f"{prefix}-{self.name}"


@dataclass(frozen=True)
class Fabric:
    """A lab's switches, cables and where hosts go; `spec` is what `--topology` said."""

    spec: str
    switches: tuple[Switch, ...]
    cables: tuple[Cable, ...]
    external: str  # the switch the external host hangs off
    node_switches: tuple[str, ...]  # the switches nodes are spread over, in order

    @property
    def single(self) -> bool:
        return not self.cables

    def switch(self, name: str) -> Switch:
        for switch in self.switches:
            if switch.name == name:
                return switch
        raise TopologyError(f"no switch {name!r}: this lab has {', '.join(s.name for s in self.switches)}")

    def bridge(self, name: str, prefix: str) -> str:
        return self.switch(name).bridge(prefix, single=self.single)

    def cable(self, one: str, other: str) -> Cable:
        """The cable between switches `one` and `other` (by name, either order)."""
        self.switch(one), self.switch(other)
        for cable in self.cables:
            if cable.joins(one, other):
                return cable
        links = ", ".join(f"{c.a.switch}-{c.b.switch}" for c in self.cables) or "none"
        raise TopologyError(f"no link between {one} and {other}: this lab's links are {links}")

    def cables_of(self, name: str) -> tuple[Cable, ...]:
        self.switch(name)
        return tuple(c for c in self.cables if name in (c.a.switch, c.b.switch))

    def node_switch(self, index: int, *, nodes: int) -> str:
        """The switch of node `index` (1-based) of `nodes`: leaves alternate; a line spreads them from
        its first switch to its last."""
        if self.spec == LEAF_SPINE or len(self.node_switches) == 1:
            return self.node_switches[(index - 1) % len(self.node_switches)]
        last = len(self.node_switches) - 1
        return self.node_switches[round((index - 1) * last / max(nodes - 1, 1))]

    @property
    def first_host_port(self) -> int:
        """The lowest port number no cable uses on any switch."""
        return 1 + max((end.port for c in self.cables for end in (c.a, c.b)), default=0)

    def config_links(self) -> list[tuple[str, str]]:
        """The controller config's `[[links]]`: ("0x11:1", "0x1:1") per cable, "dpid:port" each end."""
        return [(self._dpid_port(c.a), self._dpid_port(c.b)) for c in self.cables]

    def _dpid_port(self, end: End) -> str:
        return f"{self.switch(end.switch).dpid:#x}:{end.port}"


def parse(spec: str) -> Fabric:
    """The fabric `--topology spec` names: `single`, `leaf-spine` or `line:N` (2 <= N <= MAX_LINE)."""
    if spec == SINGLE:
        return Fabric(SINGLE, (Switch("sw", 1),), (), external="sw", node_switches=("sw",))
    if spec == LEAF_SPINE:
        switches = tuple(Switch(name, dpid) for name, dpid in SPINES + LEAVES)
        pairs = [(leaf, spine) for leaf, _ in LEAVES for spine, _ in SPINES]
        return Fabric(spec, switches, _cable(pairs), external=BORDER,
                      node_switches=tuple(name for name, _ in LEAVES if name != BORDER))
    match = re.fullmatch(r"line:(\d+)", spec)
    if match is None:
        raise TopologyError(f"--topology {spec}: one of {SINGLE}, {LEAF_SPINE}, {LINE}:N (N switches in a row)")
    count = int(match.group(1))
    if not 2 <= count <= MAX_LINE:
        raise TopologyError(f"--topology {spec}: a line of 2 to {MAX_LINE} switches ({SINGLE} for one)")
    names = tuple(f"s{i}" for i in range(1, count + 1))
    return Fabric(spec, tuple(Switch(name, i) for i, name in enumerate(names, 1)),
                  _cable(list(zip(names, names[1:]))), external=names[0], node_switches=names)


def _cable(pairs: list[tuple[str, str]]) -> tuple[Cable, ...]:
    """Cables for `pairs` of switch names, each end on its switch's next port from 1."""
    next_port: dict[str, int] = {}

    def take(name: str) -> End:
        next_port[name] = next_port.get(name, 0) + 1
        return End(name, next_port[name])

    return tuple(Cable(index, take(a), take(b)) for index, (a, b) in enumerate(pairs))
