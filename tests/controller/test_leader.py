"""Leader election's decisions (controller/leader.py) with a hand-turned clock and an in-memory
Lease that behaves as the API server's: conditional writes, a lost race is a ConflictError. The
real Lease on the real API server is tests/controller/kube/test_lease.py's."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from ctlfakes import Clock

from controller.errors import ConflictError, TemporaryError
from controller.leader import Election, Elector, LeaseRecord, Step, Timing

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


class MemoryLease:
    """One Lease: versions count up, a write based on an old version is refused, `down` fails all."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.down = False
        self._versions = 0

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, record: LeaseRecord, *, timeout: float) -> LeaseRecord:
        self._check()
        if self.record is not None:
            raise ConflictError("lease exists")
        return self._store(record)

    def update(self, record: LeaseRecord, *, acquired: bool, timeout: float) -> LeaseRecord:
        self._check()
        if self.record is None or record.version != self.record.version:
            raise ConflictError("lease changed")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self._versions += 1
        self.record = replace(record, version=str(self._versions))
        return self.record

    def _check(self) -> None:
        if self.down:
            raise TemporaryError("the API server is away")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def started_leading(self, generation: int) -> None:
        self.events.append(("lead", generation))

    def following(self, holder: str | None, generation: int) -> None:
        self.events.append(("follow", (holder, generation)))

    def stopped_leading(self, reason: str) -> None:
        self.events.append(("stopped", reason))


def election(name: str, lease: MemoryLease, clock: Clock) -> tuple[Election, Recorder]:
    recorder = Recorder()
    return Election(Elector(name, TIMING), lease, recorder, clock=clock, stop=threading.Event()), recorder


def leader_and_follower() -> tuple[MemoryLease, Clock, Election, Election]:
    """a created the lease and leads; b has seen it."""
    lease, clock = MemoryLease(), Clock()
    a, _ = election("a", lease, clock)
    b, _ = election("b", lease, clock)
    a.attempt()
    b.attempt()
    return lease, clock, a, b


def test_the_first_candidate_creates_the_lease_and_leads_with_generation_zero() -> None:
    lease, clock = MemoryLease(), Clock()
    a, _ = election("a", lease, clock)
    assert a.attempt() is None
    assert a.leading() and a.elector.generation == 0
    assert lease.record is not None and lease.record.holder == "a" and lease.record.duration == 15


def test_a_second_candidate_waits_while_the_lease_is_renewed_and_takes_it_once_expired() -> None:
    lease, clock = MemoryLease(), Clock()
    a, _ = election("a", lease, clock)
    b, _ = election("b", lease, clock)
    a.attempt()
    for _ in range(20):  # 40 s: a renews every 2 s, so b never sees the record unchanged for 15 s
        clock.advance(2)
        a.attempt()
        b.attempt()
        assert a.leading() and not b.leading()
    assert b.elector.holder == "a"
    clock.advance(14.9)  # a is dead from here: b's clock counts from when it last saw a change
    b.attempt()
    assert not b.leading()
    clock.advance(0.2)
    b.attempt()
    assert b.leading() and b.elector.generation == 1  # a newer leader: a larger generation id


def test_expiry_is_judged_by_the_candidates_own_clock_not_by_the_record() -> None:
    """A record the candidate first sees now is alive for a full duration from now, however old
    it is: a restarted candidate never takes a lease its holder may still be renewing."""
    lease, clock = MemoryLease(), Clock()
    lease.create(LeaseRecord("a", 15, transitions=4), timeout=1)
    b, _ = election("b", lease, clock)
    b.attempt()
    clock.advance(14)
    b.attempt()
    assert not b.leading()
    clock.advance(1)
    b.attempt()
    assert b.leading() and b.elector.generation == 5


def test_a_leader_that_cannot_renew_stops_leading_before_its_lease_expires_for_others() -> None:
    lease, clock, a, b = leader_and_follower()  # b sees a's record now
    lease.down = True
    clock.advance(9.9)
    assert a.attempt() is not None and a.leading()
    clock.advance(0.1)
    assert not a.leading()  # at the renew deadline: it must not write any more
    lease.down = False
    clock.advance(4.9)
    b.attempt()
    assert not b.leading()  # 14.9 s: a stopped 5 s ago, b still waits for the lease to expire
    clock.advance(0.1)
    b.attempt()
    assert b.leading()


def test_the_leader_tries_once_more_just_before_its_deadline_a_follower_right_at_the_expiry() -> None:
    lease, clock, a, b = leader_and_follower()
    assert a.elector.next_wait(clock()) == b.elector.next_wait(clock()) == 2
    clock.advance(9)
    assert a.elector.next_wait(clock()) == pytest.approx(1)
    clock.advance(5)
    assert b.elector.next_wait(clock()) == pytest.approx(1.001)
    clock.advance(b.elector.next_wait(clock()))
    b.attempt()
    assert b.leading()


def test_a_leader_that_reads_another_holder_stops_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a, _ = election("a", lease, clock)
    a.attempt()
    assert lease.record is not None
    lease.record = replace(lease.record, holder="b", transitions=1, version="99")  # b took it (a's clock was off)
    a.attempt()
    assert not a.leading()
    assert a.elector.plan(clock()).step is Step.WAIT


def test_of_two_candidates_racing_for_a_free_lease_one_wins() -> None:
    lease, clock = MemoryLease(), Clock()
    lease.create(LeaseRecord(None, 15, transitions=2), timeout=1)
    a, _ = election("a", lease, clock)
    b, _ = election("b", lease, clock)
    a.elector.observe(lease.get(), clock())
    b.elector.observe(lease.get(), clock())
    a_plan, b_plan = a.elector.plan(clock()), b.elector.plan(clock())
    assert a_plan.step is b_plan.step is Step.TAKE
    assert a_plan.record is not None and b_plan.record is not None
    lease.update(a_plan.record, acquired=True, timeout=1)
    with pytest.raises(ConflictError):
        lease.update(b_plan.record, acquired=True, timeout=1)


def test_the_loop_tells_whom_it_follows_when_it_leads_and_when_it_stops() -> None:
    """`run` with a stop event set by the listener: a follows b, leads after b's lease expires,
    then loses the API for longer than its renew deadline and stops (the loop ends)."""
    lease, clock = MemoryLease(), Clock()
    lease.create(LeaseRecord("b", 15, transitions=3), timeout=1)
    recorder = Recorder()
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        clock.advance(max(seconds, 0.5))
        if recorder.events and recorder.events[-1] == ("lead", 4):
            lease.down = True
        return stop.is_set()

    stop.wait = wait  # type: ignore[method-assign]  # time passes only on the hand-turned clock
    Election(Elector("a", TIMING), lease, recorder, clock=clock, stop=stop).run()
    assert recorder.events[0] == ("follow", ("b", 3))
    assert ("lead", 4) in recorder.events
    assert recorder.events[-1][0] == "stopped" and "the API server is away" in str(recorder.events[-1][1])


def test_periods_that_would_let_a_leader_outlive_its_lease_are_refused() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


def test_a_leader_that_leaves_hands_the_lease_over_for_the_next_try() -> None:
    lease, clock, a, b = leader_and_follower()
    record = a.elector.release()
    assert record is not None and (record.holder, record.duration, record.transitions) == (None, 1, 0)
    assert not a.leading()
    lease.update(record, acquired=False, timeout=1)
    clock.advance(0.1)  # no waiting for the lease to expire
    b.attempt()
    assert b.leading() and b.elector.generation == 1
    assert b.elector.release() is not None and a.elector.release() is None  # a leads no more: nothing to release
