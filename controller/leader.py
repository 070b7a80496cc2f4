"""Leader election between controller replicas: the decisions, apart from the Lease's I/O.

Two controllers run; one writes (flows, the store), the other waits. Who writes is decided by a
`coordination.k8s.io` Lease, the way client-go's leaderelection does it (the same fields, the same
15/10/2 s defaults), so `kubectl get lease` reads the same as for any Kubernetes controller:

- A Lease not renewed for `leaseDurationSeconds` is free. Expiry is judged by *our* clock from
  when we last saw the record change (client-go's `observedTime`), never from the `renewTime`
  written by another machine, whose clock may differ.
- Taking a free Lease (or one held by a dead leader) increments `leaseTransitions`; renewing it
  keeps it. Every write is conditional on the resourceVersion read, so of two candidates one wins.
- The leader renews every `retry_period`; if it has not renewed successfully within
  `renew_deadline` (< the lease duration), it stops leading *before* the others may take over.
  `Elector.leading(now)` says so from the clock alone, so a writer asking it stops in time even
  when the renewing thread hangs on the network.

`leaseTransitions` is the OpenFlow generation id (controller/switch.py): a newer leader always has
a larger one, so a switch refuses the master role to a deposed leader that still believes it leads.

`Elector` is pure (records and times in, decisions out); `Election.run` drives it against a
`LeaseLock` (controller/kube/lease.py on the API server) with an injected clock and wait.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from controller.errors import ConflictError, ControllerError
from controller.logs import kv

LOG = logging.getLogger("underlay.leader")
EXPIRY_MARGIN = 0.001  # seconds past an expiry to look again: a wait may end a hair early


@dataclass(frozen=True)
class Timing:
    """Seconds, as `[kubernetes]` configures them (Kubernetes' own defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(f"lease_duration ({self.lease_duration:g}) > renew_deadline ({self.renew_deadline:g}) "
                             f"> retry_period ({self.retry_period:g}) > 0 is needed: a leader must give up "
                             "before its lease expires, and try more than once before giving up")


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says (its spec), and the resourceVersion a conditional write is based on."""

    holder: str | None
    duration: float
    transitions: int = 0
    version: str | None = None  # None: not written yet


class Step(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    TAKE = "take"  # free or expired: hold it, one transition more
    RENEW = "renew"  # ours: write a fresh renewTime
    WAIT = "wait"  # someone else's and alive


@dataclass(frozen=True)
class Plan:
    step: Step
    record: LeaseRecord | None  # what to write (None for WAIT)


class Elector:
    """One candidate's view of the Lease. Feed it what each attempt read and whether its write
    succeeded; ask it what to write next and whether it leads."""

    def __init__(self, identity: str, timing: Timing) -> None:
        self.identity, self.timing = identity, timing
        self.observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # last successful write while leading; None: not leading

    def observe(self, record: LeaseRecord | None, now: float) -> None:
        """A read of the Lease: a changed record restarts its expiry, on our clock. A leader that
        reads someone else's name has lost it, whatever its clock says (one that reads no Lease
        creates it again next, and leads on if that write wins, as client-go's candidates do)."""
        if self._renewed_at is not None and (record is None or record.holder != self.identity):
            self._renewed_at = None
        if record != self.observed:
            self.observed, self._observed_at = record, now

    def plan(self, now: float) -> Plan:
        """What to write after the last `observe`."""
        record = self.observed
        if record is None:
            return Plan(Step.CREATE, LeaseRecord(self.identity, self.timing.lease_duration))
        if record.holder == self.identity:
            return Plan(Step.RENEW, replace(record, duration=self.timing.lease_duration))
        if record.holder and now < self._observed_at + record.duration:
            return Plan(Step.WAIT, None)
        return Plan(Step.TAKE, replace(record, holder=self.identity, duration=self.timing.lease_duration,
                                       transitions=record.transitions + 1))

    def wrote(self, record: LeaseRecord, now: float) -> None:
        """Our write of `record` (as the API answered it) succeeded: we lead, renewed as of `now`."""
        self.observe(record, now)
        self._renewed_at = now

    def release(self) -> LeaseRecord | None:
        """What a leader that leaves writes (client-go's ReleaseOnCancel): no holder, a one-second
        duration, the transitions kept, so a follower takes over at its next try instead of after
        a whole lease duration. Leading stops here; None when there is nothing of ours to release."""
        record, was_leading = self.observed, self._renewed_at is not None
        self._renewed_at = None
        if record is None or not was_leading or record.holder != self.identity:
            return None
        return replace(record, holder=None, duration=1)

    def outbid(self, generation: int, now: float) -> LeaseRecord | None:
        """A switch has seen `generation`, more than our Lease's transitions, yet we lead: the
        Lease's history was lost (deleted and created again). What to write to lead on with a
        larger generation id; None when we do not lead (then the switch is right: step down).
        The write is conditional: a leader deposed without knowing it cannot make it."""
        record = self.observed
        if not self.leading(now) or record is None or record.holder != self.identity:
            return None
        return replace(record, transitions=max(record.transitions, generation) + 1)

    def leading(self, now: float) -> bool:
        """True while our last successful write is younger than the renew deadline."""
        return self._renewed_at is not None and now - self._renewed_at < self.timing.renew_deadline

    @property
    def was_leading(self) -> bool:
        return self._renewed_at is not None

    @property
    def generation(self) -> int:
        """The OpenFlow generation id of the Lease as last seen: its transitions (0 if none yet)."""
        return self.observed.transitions if self.observed is not None else 0

    @property
    def holder(self) -> str | None:
        return self.observed.holder if self.observed is not None else None

    def next_wait(self, now: float) -> float:
        """Seconds to the next attempt: the retry period, but sooner where a moment matters: a
        follower tries right when the Lease it watches expires (a failover then takes the lease
        duration from the last renewal it saw, not up to a retry period more), a leader that keeps
        failing once more just before its deadline rather than after it."""
        retry = self.timing.retry_period
        if self._renewed_at is not None:
            return max(0.0, min(retry, self._renewed_at + self.timing.renew_deadline - now))
        record = self.observed
        if record is None or not record.holder or record.holder == self.identity:
            return retry
        expiry = self._observed_at + record.duration - now
        return retry if expiry <= 0 else min(retry, expiry + EXPIRY_MARGIN)


class LeaseLock(Protocol):
    """The Lease on the API server (controller/kube/lease.py). Writes are conditional on the
    record's version and answer the record as written; a lost race raises ConflictError."""

    def get(self) -> LeaseRecord | None: ...

    def create(self, record: LeaseRecord, *, timeout: float) -> LeaseRecord: ...

    def update(self, record: LeaseRecord, *, acquired: bool, timeout: float) -> LeaseRecord: ...


class Listener(Protocol):
    def started_leading(self, generation: int) -> None: ...

    def following(self, holder: str | None, generation: int) -> None: ...

    def stopped_leading(self, reason: str) -> None: ...


class Election:
    """The loop: try every retry period; tell the listener when we start leading, whom we follow,
    and when we stop (after which the loop ends: a deposed leader does not come back in-process)."""

    def __init__(self, elector: Elector, lock: LeaseLock, listener: Listener, *, clock: Callable[[], float],
                 stop: threading.Event) -> None:
        self.elector, self.lock, self.listener, self.clock, self.stop = elector, lock, listener, clock, stop
        self._followed: tuple[str | None, int] | None = None

    def leading(self) -> bool:
        """For writers, from any thread: lead only while the last renewal is fresh (see Elector)."""
        return self.elector.leading(self.clock())

    def run(self) -> None:
        while not self.stop.is_set() and self.turn():
            self.stop.wait(self.elector.next_wait(self.clock()))

    def turn(self) -> bool:
        """One attempt, and what it changed told to the listener. False once we stopped leading."""
        was_leading = self.elector.was_leading
        reason = self.attempt()
        if was_leading and not self.elector.leading(self.clock()):
            self.listener.stopped_leading(reason or "lost the lease")
            return False
        if not was_leading and self.elector.was_leading:
            LOG.info(kv("leading", identity=self.elector.identity, generation=self.elector.generation))
            self.listener.started_leading(self.elector.generation)
        elif not self.elector.was_leading:
            self._follow()
        return True

    def outbid(self, generation: int) -> int:
        """Raise the Lease's transitions past `generation` (see Elector.outbid); the new generation
        id. Raises ConflictError when the Lease is not ours to raise, ControllerError when the API
        is away."""
        record = self.elector.outbid(generation, self.clock())
        if record is None:
            raise ConflictError(f"{self.elector.identity} does not lead: it cannot raise the generation")
        written = self.lock.update(record, acquired=False, timeout=self.elector.timing.retry_period)
        self.elector.wrote(written, self.clock())
        return written.transitions

    def attempt(self) -> str | None:
        """One read and, unless the Lease is someone else's and alive, one write. Returns why it
        failed (None: it did not). A failure only costs the leader once its deadline passes."""
        timeout = self.elector.timing.retry_period
        try:
            self.elector.observe(self.lock.get(), self.clock())
            plan = self.elector.plan(self.clock())
            if plan.record is None:
                return None
            if plan.step is Step.CREATE:
                written = self.lock.create(plan.record, timeout=timeout)
            else:
                written = self.lock.update(plan.record, acquired=plan.step is Step.TAKE, timeout=timeout)
            self.elector.wrote(written, self.clock())
            return None
        except ConflictError as err:  # another candidate wrote first: read again next time
            return f"lost a race for the lease: {err}"
        except ControllerError as err:  # the API is away or refuses us
            LOG.warning(kv("lease-failed", identity=self.elector.identity, error=err))
            return str(err)

    def _follow(self) -> None:
        seen = (self.elector.holder, self.elector.generation)
        if seen != self._followed:
            self._followed = seen
            LOG.info(kv("following", identity=self.elector.identity, leader=seen[0], generation=seen[1]))
            self.listener.following(*seen)
