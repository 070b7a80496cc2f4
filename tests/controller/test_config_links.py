"""The fabric's config: switch names and `[[links]]`, and errors that name the key they are about."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from controller.config import ConfigError, parse
from controller.topology import Link, LinkEnd

FABRIC = """
store = ":memory:"
[nodes.n1]
token = "t"
dpid = "0x3"
port = 7
[switches."0x1"]
name = "leaf1"
trusted_ports = [1]
[switches."0x2"]
name = "leaf2"
[switches."0x3"]
[[links]]
a = "0x1:5"
b = "0x3:1"
[[links]]
a = "0x3:2"
b = "2:5"
"""


def fabric(**changes: Any) -> dict[str, Any]:
    return {**tomllib.loads(FABRIC), **changes}


def test_links_and_names() -> None:
    config = parse(fabric())
    assert config.links == (Link(LinkEnd(1, 5), LinkEnd(3, 1)), Link(LinkEnd(2, 5), LinkEnd(3, 2)))
    assert [config.switches[dpid].name for dpid in (1, 2, 3)] == ["leaf1", "leaf2", None]


def test_without_links_nothing_changes() -> None:
    config = parse({"store": ":memory:", "switches": {"0x1": {"trusted_ports": [1]}}})
    assert config.links == ()
    assert config.switches[1].name is None


def test_a_link_is_the_same_whichever_end_comes_first() -> None:
    assert Link(LinkEnd(3, 1), LinkEnd(1, 5)) == Link(LinkEnd(1, 5), LinkEnd(3, 1))
    assert str(Link(LinkEnd(3, 1), LinkEnd(1, 5))) == "0x1:5-0x3:1"


@pytest.mark.parametrize(("links", "message"), [
    ([{"a": "0x1:5", "b": "0x9:1"}], 'links[0].b: switch 0x9 is not configured (add [switches."0x9"])'),
    ([{"a": "0x1:5", "b": "0x3:1"}, {"a": "0x2:4", "b": "0x1:5"}], "links[1].b: port 0x1:5 is already links[0].a"),
    ([{"a": "0x1:1", "b": "0x3:1"}], "links[0].a: port 0x1:1 is a trusted port of switch 0x1"),
    ([{"a": "0x1:5", "b": "0x3:7"}], "links[0].b: port 0x3:7 is node n1's pinned port"),
    ([{"a": "0x1:5", "b": "0x1:6"}], "links[0]: a and b are both on switch 0x1: a link joins two switches"),
    ([{"a": "0x1:5", "b": "0x1:5"}], "links[0]: a and b are both on switch 0x1"),
    ([{"a": "0x1", "b": "0x3:1"}], "links[0].a: '0x1' is not a \"dpid:port\" string"),
    ([{"a": "0x1:0", "b": "0x3:1"}], "links[0].a: '0x1:0' is not"),
    ([{"a": "0x1:65280", "b": "0x3:1"}], "links[0].a: '0x1:65280' is not"),
    ([{"a": "leaf1:5", "b": "0x3:1"}], "links[0].a: 'leaf1:5' is not"),
    ([{"a": 5, "b": "0x3:1"}], "links[0].a: 5 is not"),
    ([{"a": "0x1:5"}], "links[0].b: missing"),
    ([{"a": "0x1:5", "b": "0x3:1", "speed": 10}], "links[0].speed: unknown key"),
    ([3], "links[0]: expected a table"),
    ({"a": "0x1:5", "b": "0x3:1"}, "links: expected an array of tables [[links]]"),
])
def test_bad_links_name_their_key(links: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(fabric(links=links))
    assert str(caught.value).startswith(message)


def test_a_switch_name_is_a_string() -> None:
    with pytest.raises(ConfigError, match=r'^switches.0x1.name: 1 is not'):
        parse({"store": ":memory:", "switches": {"0x1": {"name": 1}}})
