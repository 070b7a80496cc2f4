"""Many ADDs at once on one node: distinct addresses, and DELs that leave nothing behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from underlay_testbed import links_in, ns_of

pytestmark = pytest.mark.rig
N = 50


def test_fifty_concurrent_adds_then_dels(make_node, pods, segment):
    node = make_node("n1")
    paths = [pods.make(f"c{i}") for i in range(N)]
    conf = node.conf()

    with ThreadPoolExecutor(N) as pool:
        adds = list(pool.map(lambda i: node.cni("ADD", conf, container_id=f"c{i}", netns=paths[i]), range(N)))

    assert [a.returncode for a in adds] == [0] * N, [a.stdout for a in adds if a.returncode]
    addresses = {a.json["ips"][0]["address"] for a in adds}
    assert len(addresses) == N
    assert len({a.json["interfaces"][0]["mac"] for a in adds}) == N
    assert len(segment.allocations("n1")) == N

    with ThreadPoolExecutor(N) as pool:
        dels = list(pool.map(lambda i: node.cni("DEL", conf, container_id=f"c{i}", netns=paths[i]), range(N)))

    assert [d.returncode for d in dels] == [0] * N
    assert segment.allocations("n1") == {}
    assert all(links_in(ns_of(p)) == ["lo"] for p in paths)
    assert not list((node.socket.parent / "n1-state").glob("*.json"))
