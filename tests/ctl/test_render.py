"""Tables, bars and ages (ctl/render.py) and every verb's text from the controller's JSON: no root,
no controller."""

from __future__ import annotations

import argparse
import datetime

import pytest
from samples import FLOW, STALE, nodes, pods, pools, switches

from ctl.render import age, bar, table
from ctl.verbs import flows as flows_verb
from ctl.verbs import nodes as nodes_verb
from ctl.verbs import pods as pods_verb
from ctl.verbs import pools as pools_verb
from ctl.verbs import switches as switches_verb

NOW = datetime.datetime(2026, 11, 27, 20, 0, 12, tzinfo=datetime.UTC)


def test_a_table_aligns_columns_numbers_right_and_shows_none_as_a_dash() -> None:
    text = table(("NAME", "N", "NOTE"), [("a", 5, None), ("longer", 123, "x")], right=("N",))
    assert text.splitlines() == ["NAME      N  NOTE",
                                 "a         5  -",
                                 "longer  123  x"]


@pytest.mark.parametrize("size, parts, expected", [
    (100, [0, 0, 0], "[..........]"),
    (100, [50, 0, 0], "[#####.....]"),
    (100, [30, 10, 20], "[###rcc....]"),
    (65536, [1, 0, 0], "[#.........]"),  # one address of many still shows
    (10, [10, 0, 0], "[##########]"),
    (3, [1, 1, 1], "[###rrrrccc]"),  # rounded at the running total: full is full
    (0, [0, 0, 0], "[          ]"),
])
def test_bars(size: int, parts: list[int], expected: str) -> None:
    drawn = bar(size, parts, width=10)
    assert drawn == expected and len(drawn) == 12


def test_a_bar_with_every_part_tiny_still_fits() -> None:
    assert bar(10**6, [1] * 3, width=2) == "[#r]"


@pytest.mark.parametrize("iso, expected", [
    ("2026-11-27T20:00:00.000+00:00", "12s ago"), ("2026-11-27T19:55:00+00:00", "5m ago"),
    ("2026-11-27T17:00:00+00:00", "3h ago"), ("2026-11-25T20:00:00+00:00", "2d ago"), (None, None),
])
def test_ages(iso: str | None, expected: str | None) -> None:
    assert age(iso, now=NOW) == expected


def test_switches_show_sync_role_counts_and_age() -> None:
    text = switches_verb.render({"switches": switches()}, argparse.Namespace(), now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["SWITCH", "NAME", "CONNECTED", "ROLE", "DESIRED", "ACTUAL", "CONVERGED", "IN", "SYNC"]
    assert lines[1].split() == ["0000000000000001", "leaf1", "yes", "equal", "40", "40", "12s", "ago", "yes"]
    assert lines[2].split() == ["0000000000000002", "-", "yes", "master", "12", "11", "2m", "ago", "NO"]
    assert lines[3].split() == ["0000000000000030", "-", "NO", "-", "9", "-", "-", "-"]
    assert "flows diff" in lines[-1]


def test_pools_draw_a_bar_per_family() -> None:
    text = pools_verb.render({"pools": pools()}, argparse.Namespace(width=10), now=NOW)
    lines = text.splitlines()
    assert lines[1].split() == ["default", "(default)", "198.18.0.0/24", "100", "3", "1", "2", "[#rc.......]", "6%"]
    assert lines[2].split()[:2] == ["dual", "198.18.1.0/24"]
    assert lines[3].split() == ["fd00:18:1::/64", "200", "0", "0", "0", "[..........]", "0%"]
    assert lines[-1].startswith("bar: # allocated")


def test_nodes_and_pods() -> None:
    node_lines = nodes_verb.render({"nodes": nodes()}, argparse.Namespace(), now=NOW).splitlines()
    assert node_lines[2].split() == ["node2", "198.18.0.12,fd00:18::12", "02:00:00:00:01:02", "-", "not", "learned", "1"]
    pod_lines = pods_verb.render({"pods": pods()}, argparse.Namespace(), now=NOW).splitlines()
    assert pod_lines[1].split() == ["default/web-0", "eth0", "node1", "198.18.0.100", "02:00:c6:12:00:64", "macvlan",
                                    "default", "0000000000000001", "4", "placed"]
    assert pod_lines[3].split()[-3:] == ["-", "-", "unplaced"]


def test_pods_are_chosen_by_name_namespace_or_address_and_an_unknown_one_is_named() -> None:
    assert [p["name"] for p in pods_verb.select(pods(), ["web-1", "default/db-0", "198.18.0.100"])] == [
        "web-1", "db-0", "web-0"]
    assert [p["name"] for p in pods_verb.select(pods(), ["fd00:18::102"])] == ["db-0"]
    assert [p["name"] for p in pods_verb.select(pods(), [], node="node2")] == ["db-0"]
    with pytest.raises(Exception, match=r"pod web-9: no such pod holds an address \(`underlayctl pods` lists them\)"):
        pods_verb.select(pods(), ["web-9"])
    with pytest.raises(Exception, match="pod web-0: no such pod on node node2"):
        pods_verb.select(pods(), ["web-0"], node="node2")


def test_a_flows_diff_says_what_the_controller_will_do() -> None:
    data = {"switches": [
        {"dpid": 1, "name": "leaf1", "connected": True, "state": "diff", "in_sync": True, "to_delete": [], "to_add": []},
        {"dpid": 2, "name": None, "connected": True, "state": "diff", "in_sync": False, "to_delete": [STALE],
         "to_add": [FLOW]},
        {"dpid": 0x30, "name": None, "connected": False},
    ]}
    text = flows_verb.render(data, argparse.Namespace(flows_action="diff"), now=NOW)
    assert text.splitlines() == [
        "switch 0000000000000001 (leaf1): in sync",
        "switch 0000000000000002: 2 flows differ",
        f"  - {STALE['text']}  # forward",
        f"  + {FLOW['text']}  # arp_responder for default/web-0",
        "switch 0000000000000030: not connected, nothing to compare",
        "- on the switch but not desired: the controller deletes it when it next reads the switch",
        "+ desired but not on the switch: the controller adds it when it next reads the switch",
    ]


def test_flows_show_lists_a_switch_with_purposes() -> None:
    data = {"switches": [{"dpid": 1, "name": None, "connected": True, "state": "actual", "flows": [FLOW]}]}
    assert flows_verb.render(data, argparse.Namespace(flows_action="show"), now=NOW).splitlines() == [
        "switch 0000000000000001: 1 flows (actual)", f"  {FLOW['text']}  # arp_responder for default/web-0"]
