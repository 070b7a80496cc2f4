"""When a switch's flows are read back and repaired: the drift audit's schedule.

The switch worker (controller/switch.py) sends only the changes it computes itself while it
believes the switch holds its previous desired set. A flow deleted or edited by hand on the switch
(`ovs-ofctl del-flows`) would stay wrong until the next reconnect or failed convergence, so every
`interval` seconds the worker audits the switch. Reading all flows back costs the controller far
more than the switch (os-ken parses every flow: ~1 s at 10k pods, tests/bench/bench_audit.py), so
an audit first only counts our flows in each table it writes (OFPMP_AGGREGATE, a few small
replies) and reads everything, as on connect, and sends the difference, when a count is off (a
flow deleted or added by hand) and on every `FULL_EVERY`-th audit regardless (a flow edited in
place keeps the count). Every full read counts as a full audit (the one on connect too).

The wait is jittered down, never up: somewhere in (1 - spread, 1] x interval. Switches that
connected together then spread their reads instead of asking at once, and a repair still comes
within `interval` of the drift (plus the time of the audit itself), which is what operators are
told (`SessionStatus.audit_interval`); an edit in place within `FULL_EVERY` intervals.

Why not OpenFlow flow-removed notifications as well: they need OFPFF_SEND_FLOW_REM on every flow,
which changes every installed flow once on upgrade (no longer zero churn); they say nothing of a
flow edited by hand (mod-flows), nor of a flow added by hand; and a hand `del-flows` of a whole
table would bring one message per flow. The audit catches all of these, a deletion as soon.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from controller.logs import kv

LOG = logging.getLogger("underlay.audit")

DEFAULT_INTERVAL = 30.0  # seconds; `[openflow] audit_interval` in controller/config.py, 0 = off
SPREAD = 0.5  # the wait is cut by up to this fraction of the interval, at random
FULL_EVERY = 10  # every 10th audit reads all flows even when the counts agree


class AuditSchedule:
    """The next audit of one switch on the worker's `clock`; off when `interval` is 0."""

    def __init__(self, interval: float, *, clock: Callable[[], float],
                 rand: Callable[[], float] = random.random, spread: float = SPREAD) -> None:
        self.interval = interval
        self._clock, self._rand, self._spread = clock, rand, spread
        self._due: float | None = None  # None: off, or no full read yet (connect does one)
        self._counted = 0  # audits by counts alone since the last full read

    def done(self, *, full: bool) -> None:
        """An audit just happened (`full`: all flows read): the next is due a jittered interval on."""
        self._counted = 0 if full else self._counted + 1
        if self.interval > 0:
            self._due = self._clock() + self.interval * (1 - self._spread * self._rand())

    def full_due(self) -> bool:
        """This audit must read all flows, whatever the counts say."""
        return self._counted >= FULL_EVERY - 1

    def due(self) -> bool:
        return self._due is not None and self._clock() >= self._due

    def wait(self) -> float | None:
        """Seconds until the next audit is due (0: now); None: none is scheduled."""
        return None if self._due is None else max(self._due - self._clock(), 0.0)


def report_drift(dpid: int, *, missing: int, unexpected: int, interval: float) -> None:
    """A WARNING when an audit repaired what the switch lost since we last wrote (`missing`: a flow
    we sent is gone or was edited) or gained (`unexpected`: a flow under our cookie we did not
    send); nothing when it found nothing."""
    if missing or unexpected:
        LOG.warning(kv("drift-repaired", switch=f"{dpid:016x}", missing=missing, unexpected=unexpected,
                       audit_interval=interval))
