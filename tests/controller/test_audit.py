"""The drift audit: every `audit_interval` seconds the switch worker counts its flows on the switch,
reads them back when a count is off (and every FULL_EVERY-th audit) and repairs what was changed by
hand, with one WARNING saying how much; quiet when nothing drifted; never as a follower. The
schedule's jitter is pure (controller/audit.py). Against the in-memory switch of
tests/controller/fakeswitch.py; tests/controller/test_audit_ovs.py repairs a real Open vSwitch."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator

import pytest

from controller.audit import FULL_EVERY, AuditSchedule
from controller.switch import Role, SwitchSession
from openflow.flows import Flow, make_flow
from openflow.model import Placement, PortRole, SwitchPort, SwitchState
from openflow.pipeline import desired_flows
from tests.controller.fakeswitch import FakeDatapath

COOKIE = 0x55AA_0000_0000_0000
STATE = SwitchState(dpid=1, cookie=COOKIE, ports=(SwitchPort(2, PortRole.NODE),),
                    placements=tuple(Placement(ip=f"198.18.0.{i}", mac=f"02:00:00:00:00:{i:02x}", port=2)
                                     for i in range(100, 104)))
DESIRED = desired_flows(STATE)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_schedule_is_off_at_zero_and_jitters_down_within_one_interval() -> None:
    clock = Clock()
    off = AuditSchedule(0, clock=clock)
    off.done(full=True)
    assert (off.due(), off.wait()) == (False, None)

    for rand, wait in ((0.0, 30.0), (0.5, 22.5), (0.999, 15.015)):
        schedule = AuditSchedule(30, clock=clock, rand=lambda r=rand: r)
        assert schedule.wait() is None, "none before the first full read (connect makes one)"
        schedule.done(full=True)
        assert schedule.wait() == pytest.approx(wait) and not schedule.due()
        clock.now += wait
        assert schedule.due() and schedule.wait() == 0


def test_every_tenth_audit_reads_everything_whatever_the_counts() -> None:
    schedule = AuditSchedule(30, clock=Clock())
    schedule.done(full=True)
    fulls = []
    for _ in range(3 * FULL_EVERY):
        fulls.append(schedule.full_due())
        schedule.done(full=fulls[-1])
    assert fulls == ([False] * (FULL_EVERY - 1) + [True]) * 3


def responder(ip: str) -> Flow:
    """The flow that answers ARP for `ip` (it sends the reply back IN_PORT)."""
    (flow,) = [f for f in DESIRED if dict(f.match).get("arp_tpa") == ip and f.table == "responder" and f.actions]
    return flow


class Desired:
    """The controller's desired state for switch 1, changed by a test."""

    def __init__(self) -> None:
        self.state = STATE

    def __call__(self, dpid: int) -> SwitchState:
        return self.state


class Repairs(logging.Handler):
    """The audit's drift-repaired lines, as they are logged (after the repair's barrier), and
    anything else the worker says at INFO or above."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []
        self.other: list[str] = []  # anything else at INFO or above
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            if "drift-repaired" in record.getMessage():
                self.lines.append((record.levelno, record.getMessage()))
            elif record.levelno >= logging.INFO:
                self.other.append(record.getMessage())
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 10) -> list[tuple[int, str]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.lines) >= count, timeout)
            return list(self.lines)


@pytest.fixture
def repairs() -> Iterator[Repairs]:
    handler, logger = Repairs(), logging.getLogger("underlay")  # underlay.audit and underlay.switch
    level, logger.level = logger.level, logging.DEBUG
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def switch() -> Iterator[FakeDatapath]:
    """A switch whose worker audits every 20 ms and has converged once."""
    datapath = FakeDatapath()
    datapath.desired = Desired()
    session = SwitchSession(datapath, datapath.desired, audit_interval=0.02)
    datapath.session = session
    session.start()
    try:
        session.converge(timeout=10)
        assert datapath.flows == DESIRED
        yield datapath
    finally:
        session.close()


def test_a_flow_deleted_by_hand_is_put_back_with_one_warning(switch: FakeDatapath, repairs: Repairs) -> None:
    lost = responder("198.18.0.101")
    switch.edit(remove=frozenset({lost}))
    assert repairs.wait() == [
        (logging.WARNING, "drift-repaired switch=0000000000000001 missing=1 unexpected=0 audit_interval=0.02")]
    assert switch.flows == DESIRED, "the next audit put it back"


def test_a_flow_edited_in_place_is_found_by_the_periodic_full_read(switch: FakeDatapath, repairs: Repairs) -> None:
    """mod-flows keeps every count: the audits that only count cannot see it, the tenth reads all."""
    edited = responder("198.18.0.103")
    switch.edit(remove=frozenset({edited}), add=frozenset({dataclasses.replace(edited, actions=())}))
    assert repairs.wait() == [
        (logging.WARNING, "drift-repaired switch=0000000000000001 missing=1 unexpected=0 audit_interval=0.02")]
    assert switch.flows == DESIRED


def test_a_flow_added_or_edited_by_hand_is_undone(switch: FakeDatapath, repairs: Repairs) -> None:
    model = responder("198.18.0.102")
    stray = make_flow(model.table, model.priority, {**dict(model.match), "arp_tpa": "198.18.0.9"}, cookie=COOKIE)
    edited = responder("198.18.0.103")
    tampered = dataclasses.replace(edited, actions=())  # same key: an edit in place (mod-flows)
    switch.edit(remove=frozenset({edited}), add=frozenset({stray, tampered}))
    assert repairs.wait() == [
        (logging.WARNING, "drift-repaired switch=0000000000000001 missing=1 unexpected=1 audit_interval=0.02")]
    assert switch.flows == DESIRED


def test_audits_that_find_nothing_send_nothing_and_say_nothing(switch: FakeDatapath, repairs: Repairs) -> None:
    bundles, reads, counts = switch.bundles, switch.reads, switch.counts
    assert switch.wait(lambda: switch.reads >= reads + 2), "it keeps auditing on its own"
    tables = len({flow.table for flow in DESIRED})
    assert switch.counts - counts >= (FULL_EVERY - 1) * tables, "mostly by counting: one request per table"
    assert switch.bundles == bundles
    assert (repairs.lines, repairs.other) == ([], [])
    status = switch.session.status()
    assert status.audit_interval == 0.02 and status.last_audit is not None
    assert status.last_audit >= status.last_convergence - 1


def test_a_pod_placed_meanwhile_is_not_counted_as_drift(switch: FakeDatapath, repairs: Repairs) -> None:
    """A pod placed since the last write reaches the switch with the next audit (no request came
    for it here); its flows are the worker's own change, never counted as drift, however the two
    interleave (one bundle or two)."""
    lost = responder("198.18.0.100")
    grown = dataclasses.replace(STATE, placements=(
        *STATE.placements, Placement(ip="198.18.0.200", mac="02:00:00:00:00:c8", port=2)))
    switch.desired.state = grown
    switch.edit(remove=frozenset({lost}))
    assert repairs.wait() == [
        (logging.WARNING, "drift-repaired switch=0000000000000001 missing=1 unexpected=0 audit_interval=0.02")]
    assert switch.wait(lambda: switch.flows == desired_flows(grown))


class Follower:
    """Roles of a replica that does not lead: SLAVE, never writes."""

    def wanted(self) -> Role | None:
        return Role(master=False, generation=1)

    def may_write(self) -> bool:
        return False

    def stale(self, dpid: int, reason: str, *, generation: int | None) -> None:
        raise AssertionError("a follower claims no mastership")


def test_a_follower_never_reads_to_audit_nor_writes() -> None:
    datapath = FakeDatapath()
    session = SwitchSession(datapath, lambda dpid: STATE, audit_interval=0.01, roles=Follower())
    datapath.session = session
    datapath.edit(add=frozenset({responder("198.18.0.101")}))  # drift a leader would repair at once
    session.start()
    try:
        assert datapath.wait(lambda: datapath.roles == [datapath.ofproto.OFPCR_ROLE_SLAVE])
        session.request()
        assert not datapath.wait(lambda: datapath.reads or datapath.bundles, timeout=0.5), \
            "30 audit intervals went by: a follower would have read and written many times"
        assert session.status().last_audit is None
    finally:
        session.close()
