"""The fabric's graph → forwarding: the tree, shortest paths, failures and partitions (pure)."""

from __future__ import annotations

import itertools
import random

import pytest

from controller.topology import Forwarding, Link, LinkEnd, compute

LEAF1, LEAF2, SPINE1, SPINE2, LEAF3 = 0x1, 0x2, 0x11, 0x12, 0x3


def link(a: str, b: str) -> Link:
    return Link(LinkEnd.parse(a), LinkEnd.parse(b))


# two leaves, two spines, every leaf to every spine; leaf ports 11/12 face spines 1/2
LEAF_SPINE = (link("0x1:11", "0x11:1"), link("0x1:12", "0x12:1"), link("0x2:11", "0x11:2"), link("0x2:12", "0x12:2"))
SWITCHES = (LEAF1, LEAF2, SPINE1, SPINE2)


def walk(forwarding: Forwarding, at: int, toward: int) -> list[int]:
    """Follow next_port hop by hop, as frames do; fails on a loop."""
    visited = [at]
    while visited[-1] != toward:
        port = forwarding.next_port(visited[-1], toward)
        assert port is not None, f"{visited[-1]:#x} has no way to {toward:#x}"
        end = LinkEnd(visited[-1], port)
        (far,) = [lk.far(end).dpid for lk in forwarding.up if end in lk.ends]
        assert far not in visited, f"loop: {visited} then {far:#x}"
        visited.append(far)
    return visited


def test_leaf_spine_tree_is_bfs_from_the_lowest_dpid() -> None:
    forwarding = compute(SWITCHES, LEAF_SPINE)
    # from leaf1 (0x1): spine1 by port 11, spine2 by port 12; then leaf2 under spine1 (lower dpid first)
    assert forwarding.tree == {link("0x1:11", "0x11:1"), link("0x1:12", "0x12:1"), link("0x2:11", "0x11:2")}
    assert forwarding.tree_ports(LEAF1) == {11, 12}
    assert forwarding.tree_ports(LEAF2) == {11}
    assert forwarding.tree_ports(SPINE2) == {1}
    assert forwarding.link_ports(LEAF2) == {11, 12}


def test_shortest_paths_tie_break_by_dpid_and_port() -> None:
    forwarding = compute(SWITCHES, LEAF_SPINE)
    assert forwarding.next_port(LEAF1, LEAF2) == 11  # via spine1, the lower dpid of two equal paths
    assert forwarding.next_port(LEAF2, LEAF1) == 11
    assert forwarding.next_port(SPINE2, LEAF2) == 2
    assert forwarding.path(LEAF1, LEAF2) == (LEAF1, SPINE1, LEAF2)
    assert forwarding.next_port(LEAF1, LEAF1) is None


def test_a_spine_lost_moves_traffic_to_the_other() -> None:
    without = compute(SWITCHES, [lk for lk in LEAF_SPINE if SPINE1 not in (lk.a.dpid, lk.b.dpid)],
                      configured=LEAF_SPINE)
    assert without.path(LEAF1, LEAF2) == (LEAF1, SPINE2, LEAF2)
    assert without.next_port(LEAF1, SPINE1) is None  # cut off
    assert without.tree == {link("0x1:12", "0x12:1"), link("0x2:12", "0x12:2")}
    assert without.link_ports(LEAF1) == {11, 12}  # still configured
    assert without != compute(SWITCHES, LEAF_SPINE, configured=LEAF_SPINE)


def test_one_link_lost_recomputes_only_what_used_it() -> None:
    cut = link("0x2:11", "0x11:2")
    forwarding = compute(SWITCHES, set(LEAF_SPINE) - {cut}, configured=LEAF_SPINE)
    assert forwarding.path(LEAF1, LEAF2) == (LEAF1, SPINE2, LEAF2)
    assert forwarding.path(SPINE1, LEAF2) == (SPINE1, LEAF1, SPINE2, LEAF2)
    assert forwarding.next_port(LEAF1, SPINE1) == 11
    assert cut not in forwarding.tree and len(forwarding.tree) == 3


def test_partition_gives_each_part_its_own_tree() -> None:
    links = (link("0x1:1", "0x2:1"), link("0x3:1", "0x4:1"), link("0x4:2", "0x5:1"))
    forwarding = compute([1, 2, 3, 4, 5, 6], links)
    assert forwarding.tree == set(links)
    assert forwarding.next_port(1, 3) is None and forwarding.path(1, 5) == ()
    assert forwarding.path(3, 5) == (3, 4, 5)
    assert forwarding.reachable(4) == {3, 4, 5}
    assert forwarding.reachable(6) == {6}
    assert forwarding.tree_ports(6) == frozenset()


def test_parallel_links_each_switch_its_lower_port_and_one_in_the_tree() -> None:
    links = (link("0x1:7", "0x2:3"), link("0x1:6", "0x2:4"))
    forwarding = compute([1, 2], links)
    assert forwarding.next_port(1, 2) == 6
    assert forwarding.next_port(2, 1) == 3
    assert forwarding.tree == {link("0x1:6", "0x2:4")}


def test_links_to_unknown_switches_are_ignored() -> None:
    forwarding = compute([1, 2], [link("0x1:1", "0x2:1"), link("0x1:2", "0x9:1")])
    assert forwarding.up == {link("0x1:1", "0x2:1")}
    assert forwarding.next_port(1, 9) is None


def test_the_same_graph_in_any_order_gives_the_same_forwarding() -> None:
    first = compute(SWITCHES, LEAF_SPINE)
    for order in itertools.permutations(LEAF_SPINE):
        assert compute(reversed(SWITCHES), order) == first
    assert hash(first) == hash(compute(SWITCHES, list(reversed(LEAF_SPINE))))


@pytest.mark.parametrize("seed", range(30))
def test_random_graphs_forward_loop_free_and_shortest(seed: int) -> None:
    """Every pair in one part is joined by a walk of next ports of the BFS length; the tree spans each
    part with no cycle (parts - 1 fewer links than switches)."""
    rng = random.Random(seed)
    switches = list(range(1, rng.randint(2, 9)))
    ports = {dpid: itertools.count(1) for dpid in switches}
    links = [Link(LinkEnd(a, next(ports[a])), LinkEnd(b, next(ports[b])))
             for a, b in itertools.combinations(switches, 2) for _ in range(rng.choice((0, 0, 1, 1, 2)))]
    forwarding = compute(switches, links)
    parts = {frozenset(forwarding.reachable(dpid)) for dpid in switches}
    assert len(forwarding.tree) == len(switches) - len(parts)
    for part in parts:
        assert {dpid for lk in forwarding.tree for dpid in (lk.a.dpid, lk.b.dpid) if dpid in part} == \
            (part if len(part) > 1 else set())
    for at, toward in itertools.permutations(switches, 2):
        if toward in forwarding.reachable(at):
            assert len(walk(forwarding, at, toward)) - 1 == _bfs_distance(links, at, toward)
        else:
            assert forwarding.next_port(at, toward) is None


def _bfs_distance(links: list[Link], at: int, toward: int) -> int:
    frontier, seen, hops = {at}, {at}, 0
    while toward not in frontier:
        frontier = {lk.far(end).dpid for lk in links for end in lk.ends if end.dpid in frontier} - seen
        seen |= frontier
        hops += 1
    return hops


def test_a_line_of_five() -> None:
    links = [link(f"{i}:2", f"{i + 1}:1") for i in range(1, 5)]
    forwarding = compute(range(1, 6), links)
    assert forwarding.path(1, 5) == (1, 2, 3, 4, 5)
    assert forwarding.path(5, 1) == (5, 4, 3, 2, 1)
    assert forwarding.tree_ports(3) == {1, 2}
