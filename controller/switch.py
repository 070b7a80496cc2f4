"""One connected switch: read what it has, converge it to what we want, one bundle at a time.

A `SwitchSession` owns one datapath. Callers (REST threads, packet-in learning) only *request* a
convergence and may wait for it; one worker thread per switch does the work, so requests that arrive
while a bundle is in flight are served together by the next one (group commit). The worker:

1. on start (and after any failure), reads the switch's flows carrying our tag (flow stats, cookie
   masked to `openflow.cookies.TAG_MASK`: any purpose and owner, or an older version's bare cookie)
   and diffs them against the desired set; afterwards, while the switch is known to hold the previous
   desired set, only the change since then (`openflow.pipeline.DesiredFlows`);
2. sends only the difference inside one atomic ONF bundle, then a barrier, and waits for it;
3. every `audit_interval` seconds (jittered, controller/audit.py) counts our flows per table on the
   switch and, when a count is off (or every few audits anyway), reads them as in 1 and repairs what
   was changed by hand, with a WARNING naming what it found: drift is otherwise invisible to a
   worker that only sends its own changes. Only a writer audits (no election, or MASTER), and on
   this thread: never a read racing our own bundle.

An unchanged desired state therefore sends zero flow-mods: a controller restart never touches the
data plane. Only this worker sends on the datapath, so xids and bundle ids never race.

With two controller replicas (`roles`, controller/leading.py), the worker first claims this
connection's OpenFlow role: the leader asks for MASTER with its generation id, a follower for
SLAVE and writes nothing. The switch refuses a MASTER claim whose generation id is older than one
it has seen (OFPRRFC_STALE), and is asked which one that is: the leadership is told (`Roles.stale`)
and either proves on the Lease that it still leads (and claims again with a larger id) or steps
down. A switch that demotes us (a newer master came) refuses our next bundle; any failed
convergence claims the role again before retrying, which finds that out. And no bundle leaves
while `Roles.may_write()` says no: a leader past its renew deadline stops writing even before a
switch could tell it.

A convergence that fails (the switch refuses or does not answer; or a bug, e.g. a desired state
that cannot become flows) fails the callers waiting for it at once, with the switch and the error
named, and so does every request until the worker has tried again: callers get a TemporaryError
(HTTP 503 with Retry-After) instead of a timeout. The worker waits before trying again, twice as
long each time up to `MAX_BACKOFF` (new requests do not cut the wait short, or a deterministic
error would spin it), and logs an error once, not on every attempt; a success resets both.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.audit import AuditSchedule, report_drift
from controller.errors import SwitchUnavailable
from controller.metrics import ControllerMetrics, SwitchView, switch_label
from openflow import ofmsg
from openflow.diff import diff
from openflow.flows import Flow
from openflow.model import SwitchState
from openflow.pipeline import DesiredFlows

LOG = logging.getLogger("underlay.switch")
REPLY_TIMEOUT = 10.0
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 5.0  # seconds between attempts after failures: 0.1, 0.2, ... 5, 5


class Backoff:
    """Capped exponential delays for a worker that keeps failing; `reset()` after a success."""

    def __init__(self, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF) -> None:
        self.first, self.cap, self.delay = first, cap, 0.0

    def next(self) -> float:
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


@dataclass(frozen=True)
class _Failure:
    """The last convergence failed: requests up to `generation` fail with it; retried at `retry_at`."""

    generation: int
    reason: str
    retry_at: float


@dataclass
class _Pending:
    """Replies we wait for, keyed by xid: all parts of a multipart reply, or an error."""

    done: threading.Event = field(default_factory=threading.Event)
    parts: list[Any] = field(default_factory=list)
    error: str | None = None
    kind: tuple[int, int] | None = None  # an error's (type, code)


class Refused(SwitchUnavailable):
    """The switch answered a request with an OpenFlow error: `kind` is its (type, code)."""

    def __init__(self, message: str, *, kind: tuple[int, int] | None) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Role:
    """The OpenFlow role a replica claims on every switch (OFPT_ROLE_REQUEST)."""

    master: bool
    generation: int


class Roles(Protocol):
    """What the controller's leadership says to its switch sessions (controller/leading.py)."""

    def wanted(self) -> Role | None:
        """The role to claim; None while not known yet (claim nothing, write nothing)."""

    def may_write(self) -> bool:
        """False once this replica must not send flow-mods (no longer, or not yet, the leader)."""

    def stale(self, dpid: int, reason: str, *, generation: int | None) -> None:
        """A switch refused our MASTER claim as stale: it has seen `generation` (None: unknown)."""


@dataclass
class SwitchCounters:
    flow_mods: int = 0
    bundles: int = 0


@dataclass(frozen=True)
class SessionStatus:
    """What an operator asks of a connected switch (GET /v1/switches): the role the switch granted
    us, when it last acknowledged the desired state (wall clock), the failure since, if any; how
    often its flows are audited (0: never) and when that last happened (wall clock): a flow deleted
    or added by hand is repaired within `audit_interval` seconds (edited in place: controller/audit.py)."""

    role: str  # "equal" (no election), "master", "slave", or "none" while the claim is pending
    last_convergence: float | None
    failure: str | None
    audit_interval: float = 0.0
    last_audit: float | None = None


class SwitchSession:
    def __init__(self, datapath: Any, state_of: Callable[[int], SwitchState], *,
                 clock: Callable[[], float] = time.monotonic, backoff: Backoff | None = None,
                 roles: Roles | None = None, wall: Callable[[], float] = time.time,
                 metrics: ControllerMetrics | None = None, audit_interval: float = 0.0) -> None:
        """Without `roles` (no leader election) the connection keeps OpenFlow's EQUAL role.
        `wall` stamps the last convergence for operators (`status`); `clock` times the retries and
        the audits (every `audit_interval` seconds, 0: never)."""
        self.datapath = datapath
        self._roles = roles
        self._held: Role | None = None  # the role the switch last granted us
        self.dpid: int = datapath.id
        self._state_of = state_of
        self._desired = DesiredFlows()
        self._in_sync = False  # True: the switch holds exactly self._desired.flows
        self._drifted = False  # set by `resync` (any thread): the worker drops `_in_sync`
        self._wanted = 1  # generation 1: the first convergence after connect
        self._applied = 0
        self._failure: _Failure | None = None  # set from a failed convergence to the next success
        self._backoff = backoff or Backoff()
        self._logged: str | None = None  # the failure last logged: each distinct one is logged once
        self._clock, self._wall = clock, wall
        self._converged_at: float | None = None
        self._audit = AuditSchedule(audit_interval, clock=clock)
        self._audited_at: float | None = None
        self._closed = False
        # One lock, two conditions: a new request wakes only the worker, a finished convergence
        # only the callers waiting for it (not every waiter on every request).
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._xid_lock = threading.Lock()  # xids are taken by the worker and by `seen` callers
        self._bundle_id = 0
        self._bundle_xids: tuple[int, int] = (0, 0)  # (first xid, count) of the bundle in flight
        self._bundle_errors: list[str] = []
        self.counters = SwitchCounters()
        metrics = metrics if metrics is not None else ControllerMetrics()
        label = switch_label(self.dpid)
        self._flow_mods, self._bundles = metrics.flow_mods.labels(label), metrics.bundles.labels(label)
        self._convergence, self._clock_seconds = metrics.convergence.labels(label), metrics.clock
        self._worker = threading.Thread(target=self._run, name=f"switch-{self.dpid:016x}", daemon=True)

    # called from any thread ----------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._work.notify_all()
            self._done.notify_all()
        with self._pending_lock:
            for pending in self._pending.values():
                pending.error = "switch disconnected"
                pending.done.set()

    def converge(self, *, timeout: float) -> None:
        """Request a convergence and return once the switch acknowledged it (barrier). Raises
        SwitchUnavailable at once while the last convergence has failed and is not retried yet,
        and when the one that covers this request fails."""
        with self._lock:
            if not self._may_write():
                raise SwitchUnavailable(f"switch {self.dpid:016x}: this controller is not the leader")
            self._wanted += 1
            generation = self._wanted
            self._work.notify()
            self._raise_failure()

            def settled() -> bool:
                failed = self._failure is not None and self._failure.generation >= generation
                return self._applied >= generation or self._closed or failed

            if not self._done.wait_for(settled, timeout):
                raise SwitchUnavailable(f"switch {self.dpid:016x} did not converge within {timeout:g}s")
            if self._applied < generation:
                self._raise_failure()
                raise SwitchUnavailable(f"switch {self.dpid:016x} disconnected")

    def _raise_failure(self) -> None:
        """Under the lock: the current failure, as the error a caller gets (Retry-After: the wait)."""
        if self._failure is not None and not self._closed:
            wait = max(self._failure.retry_at - self._clock(), 0.0)
            raise SwitchUnavailable(self._failure.reason, delay=wait)

    def _may_write(self) -> bool:
        return self._roles is None or self._roles.may_write()

    def _master(self) -> bool:
        """We write to this switch (once the claim is granted): no election, or the leader's role."""
        wanted = None if self._roles is None else self._roles.wanted()
        return self._roles is None or (wanted is not None and wanted.master)

    def _role_due(self) -> bool:
        return self._roles is not None and self._roles.wanted() not in (None, self._held)

    def request(self) -> None:
        """Request a convergence without waiting (packet-in learning); also how a changed role
        reaches the worker."""
        with self._lock:
            self._wanted += 1
            self._work.notify()

    def seen(self, *, cookie: int, mac: str | None = None, ip: str | None = None) -> tuple[int, ...]:
        """The trusted ports where this switch saw `mac` as a source (or `ip` as an ARP sender)
        lately: one flow-stats request on its `seen` table (openflow.pipeline). A read, sent from
        the caller's thread beside the worker's bundles; raises SwitchUnavailable."""
        replies = self._request(ofmsg.seen_request(self.datapath, cookie, mac=mac, ip=ip))
        return ofmsg.parse_seen_ports(stat for reply in replies for stat in reply.body)

    def packet_out(self, port: int, frame: bytes) -> None:
        """Send `frame` out of `port` (LLDP probes, controller/links.py): fire and forget, from the
        caller's thread, with an xid of its own (no reply is awaited)."""
        parser, ofp = self.datapath.ofproto_parser, self.datapath.ofproto
        msg = parser.OFPPacketOut(self.datapath, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                  actions=[parser.OFPActionOutput(port)], data=frame)
        msg.set_xid(self._reserve_xids(1))
        if not self._closed:
            self.datapath.send_msg(msg)

    def read_flows(self, *, cookie: int) -> frozenset[Flow]:
        """What the switch holds under the controller's `cookie`, read now (flow stats), as the
        worker reads it before a full diff; sent from the caller's thread like `seen`."""
        replies = self._request(ofmsg.flow_stats_request(self.datapath, cookie))
        return ofmsg.parse_flow_stats(stat for reply in replies for stat in reply.body)

    def resync(self) -> None:
        """Forget that the switch holds the desired flows: the next convergence (requested now)
        reads what it has and sends the whole difference, as after a reconnect. For a switch found
        differing from what the worker left there (flows deleted or added by hand: an operator's
        read with `repair`, which `underlayctl trace` makes)."""
        with self._lock:
            self._drifted = True
            self._wanted += 1
            self._work.notify()

    def status(self) -> SessionStatus:
        held = self._held
        role = "equal" if self._roles is None else "none" if held is None else "master" if held.master else "slave"
        failure = self._failure
        return SessionStatus(role, self._converged_at, None if failure is None else failure.reason,
                             audit_interval=self._audit.interval, last_audit=self._audited_at)

    def on_reply(self, msg: Any, *, more: bool = False, error: str | None = None) -> None:
        """Called from the os-ken event thread with every reply that may be ours."""
        with self._pending_lock:
            pending = self._pending.get(msg.xid)
        if pending is None:
            first, count = self._bundle_xids
            if error and (msg.xid - first) & 0xFFFFFFFF < count:
                self._bundle_errors.append(error)  # one of the bundled flow-mods was refused
            return
        if error:
            pending.error, pending.kind = error, (msg.type, msg.code)
        else:
            pending.parts.append(msg)
        if error or not more:
            pending.done.set()

    # the worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._has_work():  # woken by a request, or when an audit falls due
                    self._work.wait(self._audit.wait() if self._master() else None)
                if self._closed:
                    return
                generation, audit = self._wanted, self._audit.due()
            try:
                self._claim_role()
                if not self._master():  # a follower holds the connection, reads at most, never writes
                    self._succeeded(self._applied)  # its claim went through: no failure to report
                    continue
                self._converge_once(audit=audit)
            except Exception as error:  # a bug too: logged with the switch named, the others go on
                self._in_sync = False  # unknown now: read it again next time
                self._held = None  # and claim the role again: a newer master may have demoted us
                self._failed(error)
                continue
            self._succeeded(generation)

    def _has_work(self) -> bool:
        """Under the lock: something for the worker to do now."""
        writes = self._master() and (self._wanted > self._applied or self._audit.due())
        return self._closed or self._role_due() or writes

    def _claim_role(self) -> None:
        """Ask the switch for the role we want, unless it granted that already. A MASTER claim
        refused as stale goes to the leadership with the generation the switch has seen: it raises
        ours through the Lease (the worker then claims again) or steps down."""
        wanted = None if self._roles is None else self._roles.wanted()
        if wanted is None or wanted == self._held:
            return
        request = ofmsg.role_request(self.datapath, master=wanted.master, generation=wanted.generation)
        try:
            self._request(request)
        except Refused as refused:
            ofp = self.datapath.ofproto
            if wanted.master and refused.kind == (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE):
                assert self._roles is not None
                seen = self._switch_generation()
                self._roles.stale(self.dpid, f"switch {self.dpid:016x} refused master with generation "
                                             f"{wanted.generation} as stale (it has seen {seen})", generation=seen)
            raise
        self._held = wanted
        LOG.info("switch=%016x event=role role=%s generation=%d", self.dpid,
                 "master" if wanted.master else "slave", wanted.generation)

    def _failed(self, error: Exception) -> None:
        """Fail every waiting caller now (also those who came during the attempt: they would get
        the same), log the error if it is new, and wait out the backoff (only closing the session
        ends the wait early)."""
        reason = str(error) if isinstance(error, SwitchUnavailable) else \
            f"switch {self.dpid:016x} cannot converge: {type(error).__name__}: {error}"
        delay = self._backoff.next()
        if reason != self._logged:
            LOG.log(logging.WARNING if isinstance(error, SwitchUnavailable) else logging.ERROR,
                    "switch=%016x event=converge-failed retry_in=%.1fs reason=%r", self.dpid, delay, reason,
                    exc_info=not isinstance(error, SwitchUnavailable))
            self._logged = reason
        with self._lock:
            self._failure = _Failure(self._wanted, reason, retry_at=self._clock() + delay)
            self._done.notify_all()
            self._work.wait_for(lambda: self._closed, timeout=delay)

    def _succeeded(self, generation: int) -> None:
        if self._logged is not None:
            LOG.info("switch=%016x event=converge-recovered", self.dpid)
        self._logged = None
        self._backoff.reset()
        with self._lock:
            self._failure = None
            self._applied = max(self._applied, generation)
            self._done.notify_all()

    def _switch_generation(self) -> int | None:
        """The largest generation id the switch has seen (a role request that changes nothing)."""
        try:
            (reply,) = self._request(ofmsg.role_request(self.datapath, master=None))
        except (SwitchUnavailable, ValueError):
            return None
        return int(reply.generation_id)

    def view(self) -> SwitchView:
        """Its role and desired flows per table, for a scrape (a copy of the set: taken at once)."""
        flows = collections.Counter(flow.table for flow in self._desired.flows)
        return SwitchView(self.dpid, self.status().role, dict(flows))

    def _converge_once(self, *, audit: bool = False) -> None:
        started = self._clock_seconds()
        self._reconcile(audit=audit)
        self._convergence.observe(self._clock_seconds() - started)

    def _reconcile(self, *, audit: bool) -> None:
        """One convergence; with `audit`, or when the switch's flows are unknown (first time, after
        a failure), from what the switch holds, read now; otherwise from the change alone."""
        state = self._state_of(self.dpid)
        if audit and self._in_sync and not self._audit.full_due() and self._counts_agree(state.cookie):
            self._audit.done(full=False)  # nothing lost or gained: no need to read every flow
            self._audited_at, audit = self._wall(), False
        appeared, vanished = self._desired.update(state)
        with self._lock:  # `resync` asked for a full read (an operator's read with repair=true)
            if self._drifted:
                self._in_sync, self._drifted = False, False
        full, drifted = audit or not self._in_sync, audit and self._in_sync
        if full:
            to_delete, to_add = diff(self.read_flows(cookie=state.cookie), self._desired.flows)
        else:  # the switch holds the previous desired set: only the change goes
            to_delete, to_add = diff(vanished, appeared)
        if to_delete or to_add:
            self._in_sync = False  # unknown until the bundle is acknowledged
            self._send_bundle([ofmsg.flow_mod_bytes(f, True) for f in to_delete]
                              + [ofmsg.flow_mod_bytes(f) for f in to_add])
            LOG.debug("switch=%016x event=converged deleted=%d added=%d", self.dpid, len(to_delete), len(to_add))
        else:
            self._barrier()
        self._in_sync = True
        self._converged_at = self._wall()
        if full:
            self._audit.done(full=True)
            self._audited_at = self._converged_at
        if drifted:  # what this worker changed itself (a pod came or went meanwhile) is no drift
            report_drift(self.dpid, missing=len(set(to_add) - appeared), unexpected=len(set(to_delete) - vanished),
                         interval=self._audit.interval)

    def _counts_agree(self, cookie: int) -> bool:
        """The audit's cheap look, while the switch should hold exactly our last desired set: as many
        of our flows in each table we write as we sent there (one OFPMP_AGGREGATE per table)."""
        for table, count in collections.Counter(flow.table for flow in self._desired.flows).items():
            (reply,) = self._request(ofmsg.aggregate_request(self.datapath, cookie, table=table))
            if reply.body.flow_count != count:
                return False
        return True


    def _send_bundle(self, mods: list[bytes]) -> None:
        """All mods in one ONF bundle, applied at its commit: no packet sees half of a change.

        Open, the pre-encoded mods, commit and a barrier go as one buffer (one write). The replies
        to open and commit, and errors for the mods (xids from the range reserved here), are
        collected; the barrier's reply says the switch has processed all of it. A mod the switch
        refuses when it is added is left out of the bundle while the rest commits (Open vSwitch,
        tests/openflow/test_ovs_roundtrip.py): any error fails the convergence, so the next one
        re-reads the switch's flows."""
        ofp = self.datapath.ofproto
        self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
        first = self._reserve_xids(len(mods) + 3)
        open_xid, commit_xid, barrier_xid = (
            (first + offset) & ofp.MAX_XID for offset in (0, len(mods) + 1, len(mods) + 2))
        blob = ofmsg.bundle_transaction(mods, bundle_id=self._bundle_id, flags=ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED,
                                        first_xid=first)
        watched = [open_xid, commit_xid, barrier_xid]
        self._expect(watched)
        self._bundle_xids, self._bundle_errors = ((first + 1) & ofp.MAX_XID, len(mods)), []
        try:
            if not self._may_write():
                raise SwitchUnavailable(f"switch {self.dpid:016x}: this controller is no longer the leader")
            if self._closed or not self.datapath.send(blob):
                raise SwitchUnavailable(f"switch {self.dpid:016x} is disconnected")
            self.counters.flow_mods += len(mods)
            self.counters.bundles += 1
            self._flow_mods.inc(len(mods))
            self._bundles.inc()
            self._wait(barrier_xid, "the bundle's barrier")
            errors = [self._pending[xid].error for xid in watched if self._pending[xid].error]
            errors += self._bundle_errors
        finally:
            self._forget(watched)
            self._bundle_xids = (0, 0)
        if errors:
            LOG.debug("switch=%016x event=bundle-refused bundle=%d errors=%r", self.dpid, self._bundle_id, errors)
            raise SwitchUnavailable(f"switch {self.dpid:016x} refused a bundle: {errors[0]}")

    def _reserve_xids(self, count: int) -> int:
        """`count` consecutive xids, taken from the datapath's counter so none is reused soon."""
        with self._xid_lock:
            first: int = (self.datapath.xid + 1) & self.datapath.ofproto.MAX_XID
            self.datapath.xid = (self.datapath.xid + count) & self.datapath.ofproto.MAX_XID
        return first

    def _barrier(self) -> None:
        self._request(self.datapath.ofproto_parser.OFPBarrierRequest(self.datapath))

    def _request(self, msg: Any) -> list[Any]:
        """Send `msg` and wait for its (possibly multipart) reply."""
        xid = self._reserve_xids(1)
        msg.set_xid(xid)
        self._expect([xid])
        try:
            if self._closed or not self.datapath.send_msg(msg):
                raise SwitchUnavailable(f"switch {self.dpid:016x} is disconnected")
            return self._wait(xid, type(msg).__name__)
        finally:
            self._forget([xid])

    def _expect(self, xids: list[int]) -> None:
        """Register these xids: replies and errors carrying them are kept for us."""
        with self._pending_lock:
            for xid in xids:
                self._pending[xid] = _Pending()

    def _wait(self, xid: int, what: str) -> list[Any]:
        pending = self._pending[xid]
        if not pending.done.wait(REPLY_TIMEOUT):
            raise SwitchUnavailable(f"switch {self.dpid:016x} did not answer {what}")
        if pending.error:
            raise Refused(f"switch {self.dpid:016x}: {pending.error}", kind=pending.kind)
        return pending.parts

    def _forget(self, xids: list[int]) -> None:
        with self._pending_lock:
            for xid in xids:
                self._pending.pop(xid, None)
