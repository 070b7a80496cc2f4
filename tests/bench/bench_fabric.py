"""Flows per switch in a fabric, for N pods on S switches: linear in N, no S² term.

Run by hand: `.venv/bin/python tests/bench/bench_fabric.py [--pods 1000 5000] [--switches 2 4 8 16]`.
Not collected by pytest. Pure computation: no switch, no root.

Each switch's state is built as the controller builds it (controller/fabricstate.py over
controller/topology.py's forwarding): its own placements, every other switch's re-pointed at its
next-hop link port, its link ports and its part of the tree; then `desired_flows`. Two shapes:
- leaf-spine: S leaves, 2 spines, every leaf cabled to both spines (redundant);
- line: S switches in a row.
Pods (macvlan, IPv4) and 4 nodes per edge switch (leaves; every switch of a line), pods spread
evenly. Per row: the most flows any switch holds, the fixed part of it (table defaults, link, flood
and LLDP flows: per port, not per pod), flows per pod on a switch, and the flows of the whole fabric.
Then the CPU cost of building a switch's desired state and flows from scratch (a reconnect), and of
one pod ADD seen by every switch (`DesiredFlows.update`, what the controller does per switch).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from controller import fabricstate, topology  # noqa: E402
from controller.topology import Forwarding, Link, LinkEnd  # noqa: E402
from openflow.fabric import fabric_flows  # noqa: E402
from openflow.model import Placement, PortRole, SwitchPort, SwitchState  # noqa: E402
from openflow.pipeline import DesiredFlows, desired_flows  # noqa: E402

COOKIE = 0x55AA_0000_0000_0000
NODES_PER_EDGE = 4  # node ports 1-4 on an edge switch; link ports from 101


def leaf_spine(leaves: int) -> tuple[list[int], list[int], list[Link]]:
    """(switches, edge switches, links): leaves 1..S, spines 1001 and 1002."""
    spines = [1001, 1002]
    links = [Link(LinkEnd(leaf, 100 + s + 1), LinkEnd(spine, 100 + leaf))
             for leaf in range(1, leaves + 1) for s, spine in enumerate(spines)]
    edges = list(range(1, leaves + 1))
    return edges + spines, edges, links


def line(count: int) -> tuple[list[int], list[int], list[Link]]:
    switches = list(range(1, count + 1))
    return switches, switches, [Link(LinkEnd(d, 102), LinkEnd(d + 1, 101)) for d in switches[:-1]]


def placements(pods: int, edges: list[int]) -> dict[int, set[Placement]]:
    """Nodes and pods on the edge switches, pods spread evenly."""
    local: dict[int, set[Placement]] = {dpid: set() for dpid in edges}
    for index, dpid in enumerate(edges):
        for port in range(1, NODES_PER_EDGE + 1):
            local[dpid].add(Placement(f"198.19.{index}.{port}", f"02:01:00:00:{index:02x}:{port:02x}", port))
    for i in range(pods):
        dpid = edges[i % len(edges)]
        local[dpid].add(Placement(f"10.{i >> 16 & 0xFF}.{i >> 8 & 0xFF}.{i & 0xFF}",
                                  f"02:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:01",
                                  1 + i // len(edges) % NODES_PER_EDGE))
    return local


def switch_state(dpid: int, forwarding: Forwarding, remote: fabricstate.RemotePlacements,
                 local: dict[int, set[Placement]]) -> SwitchState:
    ports = [SwitchPort(n, PortRole.NODE) for n in range(1, NODES_PER_EDGE + 1) if dpid in local]
    ports += [SwitchPort(n, PortRole.LINK) for n in sorted(forwarding.link_ports(dpid))]
    return SwitchState(dpid=dpid, cookie=COOKIE, ports=tuple(ports),
                       placements=frozenset().union(local.get(dpid, ()), *remote.on(dpid, local)),
                       tree_links=tuple(sorted(forwarding.tree_ports(dpid))))


@dataclass
class Built:
    switches: list[int]
    forwarding: Forwarding
    remote: fabricstate.RemotePlacements
    local: dict[int, set[Placement]]

    def state(self, dpid: int) -> SwitchState:
        return switch_state(dpid, self.forwarding, self.remote, self.local)


def build(shape: str, size: int, pods: int) -> Built:
    switches, edges, links = (leaf_spine if shape == "leaf-spine" else line)(size)
    forwarding = topology.compute(switches, links)
    return Built(switches, forwarding, fabricstate.RemotePlacements(forwarding), placements(pods, edges))


def row(shape: str, size: int, pods: int) -> str:
    built = build(shape, size, pods)
    states = {dpid: built.state(dpid) for dpid in built.switches}
    counts = {dpid: len(desired_flows(state)) for dpid, state in states.items()}
    busiest = max(counts, key=lambda dpid: counts[dpid])
    state = states[busiest]
    fixed = len(desired_flows(SwitchState(dpid=busiest, cookie=COOKIE, ports=state.ports,
                                          tree_links=state.tree_links)))
    flood = len(list(fabric_flows(state)))
    per_pod = (counts[busiest] - fixed) / max(len(state.placements), 1)
    return (f"{shape:<10} {len(built.switches):>3} {pods:>6} {counts[busiest]:>10} {fixed:>6} {flood:>10} "
            f"{per_pod:>8.2f} {sum(counts.values()):>12}")


def timings(shape: str, size: int, pods: int, runs: int) -> str:
    """CPU ms: every switch's desired state and flows from scratch, per switch; then one pod ADD
    brought to every switch's `DesiredFlows` (the sum over the switches)."""
    built = build(shape, size, pods)
    rebuild = min(_cpu(lambda: [desired_flows(built.state(dpid)) for dpid in built.switches]) for _ in range(runs))
    desired = {dpid: DesiredFlows() for dpid in built.switches}
    for dpid in built.switches:
        desired[dpid].update(built.state(dpid))
    edge = next(dpid for dpid in built.switches if dpid in built.local)
    newcomer = Placement("10.255.255.254", "02:ff:ff:ff:ff:01", 1)
    built.local[edge].add(newcomer)
    built.remote.added(edge, newcomer)
    add = _cpu(lambda: [desired[dpid].update(built.state(dpid)) for dpid in built.switches])
    return (f"{shape:<10} {len(built.switches):>3} {pods:>6} {rebuild * 1e3 / len(built.switches):>14.1f} "
            f"{add * 1e3:>16.2f}")


def _cpu(work: Callable[[], object]) -> float:
    began = time.process_time()
    work()
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--switches", type=int, nargs="+", default=[2, 4, 8, 16],
                        help="leaves of a leaf-spine (plus 2 spines); switches of a line")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'shape':<10} {'S':>3} {'pods':>6} {'max/switch':>10} {'fixed':>6} {'link/flood':>10} {'per pod':>8} "
          f"{'all switches':>12}")
    for shape in ("leaf-spine", "line"):
        for size in args.switches:
            for pods in args.pods:
                print(row(shape, size, pods), flush=True)
    print(f"\n{'shape':<10} {'S':>3} {'pods':>6} {'rebuild ms/sw':>14} {'one ADD, all ms':>16}")
    for shape in ("leaf-spine", "line"):
        for size in args.switches:
            print(timings(shape, size, max(args.pods), args.runs), flush=True)


if __name__ == "__main__":
    main()
