"""The live link state, driven by hand: LLDP confirms, port status and disconnects take links down,
miscabling is reported and not used, a restart assumes the last forwarding (pure, no switch)."""

from __future__ import annotations

import logging

import pytest

from controller import lldp
from controller.links import LinkMonitor, LinkState
from controller.topology import Forwarding, Link, LinkEnd

L1, L2, S1, S2 = 0x1, 0x2, 0x11, 0x12
NAMES = {L1: "leaf1", L2: "leaf2", S1: "spine1", S2: "spine2"}
E = LinkEnd.parse
L1S1, L1S2 = Link(E("0x1:11"), E("0x11:1")), Link(E("0x1:12"), E("0x12:1"))
L2S1, L2S2 = Link(E("0x2:11"), E("0x11:2")), Link(E("0x2:12"), E("0x12:2"))
LINKS = (L1S1, L1S2, L2S1, L2S2)


class Fabric:
    """A monitor with its changes recorded, the time in our hands."""

    def __init__(self) -> None:
        self.now = 100.0
        self.changes: list[Forwarding] = []
        self.monitor = LinkMonitor(LINKS, NAMES, now=self.now, on_change=self.changes.append)

    def connect_all(self) -> None:
        for dpid in NAMES:
            self.monitor.switch_connected(dpid, now=self.now)

    def exchange(self, *, skip: frozenset[LinkEnd] = frozenset()) -> None:
        """One tick: every frame sent crosses its cable (unless its sender is in `skip`)."""
        for end, frame in self.monitor.tick(self.now):
            assert lldp.parse(frame) == end
            if end not in skip:
                link = next(lk for lk in LINKS if end in lk.ends)
                self.monitor.heard(link.far(end), end, now=self.now)

    def advance(self, seconds: float, *, skip: frozenset[LinkEnd] = frozenset()) -> None:
        for _ in range(int(seconds)):
            self.now += 1.0
            self.exchange(skip=skip)

    def state(self, link: Link) -> str:
        (found,) = [lk for lk in self.monitor.status(now=self.now)["links"] if lk["a"] == str(link.a)]
        return str(found["state"])


@pytest.fixture
def fabric() -> Fabric:
    return Fabric()


def test_at_start_every_link_is_assumed_then_confirmed_without_a_change(fabric: Fabric) -> None:
    start = fabric.monitor.forwarding
    assert start.up == set(LINKS)
    fabric.connect_all()
    fabric.exchange()
    assert {fabric.state(link) for link in LINKS} == {"up"}
    fabric.advance(10)
    assert fabric.changes == []  # a restart changes no flow
    assert fabric.monitor.forwarding == start


def test_a_link_never_confirmed_goes_down_after_the_grace(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.advance(2, skip=frozenset({L2S1.b}))  # spine1's port 2 never speaks
    assert fabric.state(L2S1) == "unconfirmed" and fabric.monitor.forwarding.up == set(LINKS)
    fabric.advance(2, skip=frozenset({L2S1.b}))
    assert fabric.state(L2S1) == "unconfirmed"
    assert fabric.monitor.forwarding.up == {L1S1, L1S2, L2S2}
    assert len(fabric.changes) == 1 and fabric.changes[0].path(L2, L1) == (L2, S2, L1)


def test_port_down_takes_the_link_down_at_once_and_back_when_both_ends_hear(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.advance(1)
    fabric.monitor.port_changed(E("0x11:1"), live=False, now=fabric.now)
    assert fabric.state(L1S1) == "down"
    assert fabric.changes[-1].path(L1, L2) == (L1, S2, L2)
    fabric.advance(5)
    assert fabric.state(L1S1) == "down"  # frames do not cross a dead cable... nor are sent from it

    fabric.monitor.port_changed(E("0x11:1"), live=True, now=fabric.now)
    assert fabric.state(L1S1) == "unconfirmed"  # a port up is not a link up: LLDP says so
    fabric.exchange()
    assert fabric.state(L1S1) == "up"
    assert fabric.changes[-1].path(L1, L2) == (L1, S1, L2)
    assert len(fabric.changes) == 2


def test_frames_that_stop_take_the_link_down_after_three_intervals(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.advance(1)
    fabric.advance(3, skip=frozenset({L1S1.a}))
    assert fabric.state(L1S1) == "up"
    fabric.advance(1, skip=frozenset({L1S1.a}))
    assert fabric.state(L1S1) == "down"
    (status,) = [lk for lk in fabric.monitor.status(now=fabric.now)["links"] if lk["a"] == "0x1:11"]
    assert status["reason"] == "0x11:1 heard no LLDP from 0x1:11 for 3s" and status["used"] is False


def test_a_switch_lost_takes_its_links_down(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.advance(1)
    fabric.monitor.switch_disconnected(S1, now=fabric.now)
    assert [fabric.state(link) for link in LINKS] == ["down", "up", "down", "up"]
    assert fabric.changes[-1].next_port(L1, S1) is None
    assert fabric.changes[-1].tree == {L1S2, L2S2}
    fabric.monitor.switch_connected(S1, now=fabric.now)
    fabric.exchange()
    assert {fabric.state(link) for link in LINKS} == {"up"}


def test_a_switch_that_never_connects_has_its_links_down_after_the_connect_grace(fabric: Fabric) -> None:
    for dpid in (L1, L2, S2):
        fabric.monitor.switch_connected(dpid, now=fabric.now)
    fabric.advance(20)
    assert fabric.state(L1S1) == "unconfirmed" and fabric.monitor.forwarding.up == set(LINKS)
    fabric.advance(15)
    assert fabric.state(L1S1) == "down" and fabric.monitor.forwarding.up == {L1S2, L2S2}


def test_miscabled_is_reported_with_both_ends_and_not_used(fabric: Fabric, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    fabric.connect_all()
    fabric.advance(1)
    caplog.set_level(logging.INFO, logger="underlay.links")
    # leaf1's port 11 is cabled to spine1's port 2 instead of port 1
    fabric.monitor.heard(E("0x1:11"), E("0x11:2"), now=fabric.now)
    assert fabric.state(L1S1) == "miscabled"
    (status,) = [lk for lk in fabric.monitor.status(now=fabric.now)["links"] if lk["a"] == "0x1:11"]
    assert status["heard"] == {"0x1:11": "0x11:2"} and status["used"] is False
    assert status["reason"] == "0x1:11 hears 0x11:2, expected 0x11:1"
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "0x1:11" in warning[0].message and "0x11:2" in warning[0].message
    assert L1S1 not in fabric.changes[-1].up
    fabric.advance(2)  # the right frames again, but the wrong one is still recent
    assert fabric.state(L1S1) == "miscabled"
    fabric.advance(2)
    assert fabric.state(L1S1) == "up"


def test_a_frame_from_a_miscabled_link_at_start_ends_the_benefit_of_the_doubt(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.monitor.heard(E("0x2:12"), E("0x12:1"), now=fabric.now)
    assert fabric.state(L2S2) == "miscabled"
    assert fabric.monitor.forwarding.up == {L1S1, L1S2, L2S1}


def test_unknown_ends_are_ignored(fabric: Fabric) -> None:
    fabric.monitor.heard(E("0x1:40"), E("0x11:1"), now=fabric.now)
    fabric.monitor.port_changed(E("0x1:40"), live=False, now=fabric.now)
    assert fabric.changes == []


def test_frames_are_sent_from_live_ports_of_connected_switches_only(fabric: Fabric) -> None:
    fabric.monitor.switch_connected(L1, now=fabric.now, ports={11: True, 12: False})
    assert [end for end, _ in fabric.monitor.tick(fabric.now)] == [E("0x1:11")]
    assert fabric.state(L1S2) == "down"


def test_reset_forgets_everything(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.monitor.switch_disconnected(S1, now=fabric.now)
    assert fabric.monitor.forwarding.up == {L1S2, L2S2}
    fabric.monitor.reset(fabric.now)
    assert fabric.monitor.forwarding.up == set(LINKS)


def test_status_names_switches_and_the_tree(fabric: Fabric) -> None:
    fabric.connect_all()
    fabric.exchange()
    status = fabric.monitor.status(now=fabric.now)
    assert status["switches"][0] == {"dpid": "0x1", "name": "leaf1", "connected": True, "link_ports": [11, 12],
                                     "tree_ports": [11, 12]}
    assert status["tree"] == [{"a": "0x1:11", "b": "0x11:1"}, {"a": "0x1:12", "b": "0x12:1"},
                              {"a": "0x2:11", "b": "0x11:2"}]
    assert status["links"][0]["name"] == "leaf1-spine1"
