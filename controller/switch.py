"""One connected switch: read what it has, converge it to what we want, one bundle at a time.

A `SwitchSession` owns one datapath. Callers (REST threads, packet-in learning) only *request* a
convergence and may wait for it; one worker thread per switch does the work, so requests that arrive
while a bundle is in flight are served together by the next one (group commit). The worker:

1. on start, reads the switch's flows carrying our cookie (flow stats) and parses them;
2. diffs them against `openflow.pipeline.desired_flows(state)`;
3. sends only the difference inside one atomic ONF bundle, then a barrier, and waits for it.

An unchanged desired state therefore sends zero flow-mods: a controller restart never touches the
data plane. Only this worker sends on the datapath, so xids and bundle ids never race.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.errors import SwitchUnavailable
from openflow import ofmsg
from openflow.diff import diff
from openflow.flows import Flow
from openflow.model import SwitchState
from openflow.pipeline import desired_flows

LOG = logging.getLogger("underlay.switch")
REPLY_TIMEOUT = 10.0


@dataclass
class _Pending:
    """Replies we wait for, keyed by xid: all parts of a multipart reply, or an error."""

    done: threading.Event = field(default_factory=threading.Event)
    parts: list[Any] = field(default_factory=list)
    error: str | None = None


@dataclass
class SwitchCounters:
    flow_mods: int = 0
    bundles: int = 0
    packet_ins: int = 0


class SwitchSession:
    def __init__(self, datapath: Any, state_of: Callable[[int], SwitchState]) -> None:
        self.datapath = datapath
        self.dpid: int = datapath.id
        self._state_of = state_of
        self._installed: frozenset[Flow] | None = None
        self._wanted = 1  # generation 1: the first convergence after connect
        self._applied = 0
        self._failed: str | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._bundle_id = 0
        self.counters = SwitchCounters()
        self._worker = threading.Thread(target=self._run, name=f"switch-{self.dpid:016x}", daemon=True)

    # called from any thread ----------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._pending_lock:
            for pending in self._pending.values():
                pending.error = "switch disconnected"
                pending.done.set()

    def converge(self, *, timeout: float) -> None:
        """Request a convergence and return once the switch acknowledged it (barrier)."""
        with self._cond:
            self._wanted += 1
            generation = self._wanted
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._applied >= generation or self._closed, timeout):
                raise SwitchUnavailable(f"switch {self.dpid:016x} did not converge within {timeout:g}s")
            if self._applied < generation:
                raise SwitchUnavailable(f"switch {self.dpid:016x} disconnected")

    def request(self) -> None:
        """Request a convergence without waiting (packet-in learning)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    def wait_ready(self, timeout: float) -> bool:
        """True once the first convergence after connect is done."""
        with self._cond:
            return self._cond.wait_for(lambda: self._applied >= 1 or self._closed, timeout)

    def on_reply(self, msg: Any, *, more: bool = False, error: str | None = None) -> None:
        """Called from the os-ken event thread with every reply that may be ours."""
        with self._pending_lock:
            pending = self._pending.get(msg.xid)
        if pending is None:
            return
        if error:
            pending.error = error
        else:
            pending.parts.append(msg)
        if error or not more:
            pending.done.set()

    # the worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > self._applied)
                if self._closed:
                    return
                generation = self._wanted
            try:
                self._converge_once()
            except SwitchUnavailable as why:
                LOG.warning("switch=%016x event=converge-failed reason=%r", self.dpid, str(why))
                self._installed = None  # unknown now: read it again next time
                with self._cond:
                    if self._closed:
                        return
                    self._cond.wait(timeout=1.0)  # back off before retrying
                continue
            except Exception:  # a bug: log it with the switch named, keep serving the others
                LOG.exception("switch=%016x event=converge-crashed", self.dpid)
                self._installed = None
                continue
            with self._cond:
                self._applied = max(self._applied, generation)
                self._cond.notify_all()

    def _converge_once(self) -> None:
        state = self._state_of(self.dpid)
        if self._installed is None:
            replies = self._request(ofmsg.flow_stats_request(self.datapath, state.cookie))
            self._installed = ofmsg.parse_flow_stats(stat for reply in replies for stat in reply.body)
        to_delete, to_add = diff(self._installed, desired_flows(state))
        if to_delete or to_add:
            self._send_bundle([ofmsg.flow_mod(self.datapath, f, delete=True) for f in to_delete]
                              + [ofmsg.flow_mod(self.datapath, f) for f in to_add])
            LOG.debug("switch=%016x event=converged deleted=%d added=%d", self.dpid, len(to_delete), len(to_add))
            self._installed = (self._installed - set(to_delete)) | set(to_add)
        else:
            self._barrier()

    def _send_bundle(self, mods: list[Any]) -> None:
        """All mods in one atomic bundle: the switch applies all of them or none."""
        dp, ofp, parser = self.datapath, self.datapath.ofproto, self.datapath.ofproto_parser
        self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        watched: list[int] = []
        try:
            watched.append(self._send(parser.ONFBundleCtrlMsg(dp, self._bundle_id, ofp.ONF_BCT_OPEN_REQUEST,
                                                              flags, [])))
            for mod in mods:
                # the spec wants the inner message's xid to be the bundle-add message's
                watched.append(self._send(parser.ONFBundleAddMsg(dp, self._bundle_id, flags, mod, []), inner=mod))
            watched.append(self._send(parser.ONFBundleCtrlMsg(dp, self._bundle_id, ofp.ONF_BCT_COMMIT_REQUEST,
                                                              flags, [])))
            self.counters.flow_mods += len(mods)
            self.counters.bundles += 1
            self._barrier()
            errors = [self._pending[xid].error for xid in watched if self._pending[xid].error]
        finally:
            self._forget(watched)
        if errors:
            raise SwitchUnavailable(f"switch {self.dpid:016x} refused bundle {self._bundle_id}: {errors[0]}")

    def _barrier(self) -> None:
        self._request(self.datapath.ofproto_parser.OFPBarrierRequest(self.datapath))

    def _request(self, msg: Any) -> list[Any]:
        """Send `msg` and wait for its (possibly multipart) reply."""
        xid = self._send(msg)
        pending = self._pending[xid]
        try:
            if not pending.done.wait(REPLY_TIMEOUT):
                raise SwitchUnavailable(f"switch {self.dpid:016x} did not answer {type(msg).__name__}")
            if pending.error:
                raise SwitchUnavailable(f"switch {self.dpid:016x}: {pending.error}")
            return pending.parts
        finally:
            self._forget([xid])

    def _send(self, msg: Any, *, inner: Any = None) -> int:
        """Send `msg`, registering its xid for replies and errors; return the xid."""
        xid = self.datapath.set_xid(msg)
        if inner is not None:
            inner.set_xid(xid)
        with self._pending_lock:
            self._pending[xid] = _Pending()
        if self._closed or not self.datapath.send_msg(msg):
            self._forget([xid])
            raise SwitchUnavailable(f"switch {self.dpid:016x} is disconnected")
        return xid

    def _forget(self, xids: list[int]) -> None:
        with self._pending_lock:
            for xid in xids:
                self._pending.pop(xid, None)
