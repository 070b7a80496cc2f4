"""The os-ken application: switch sessions, replies, and node-port learning from packet-ins.

This is the only module that receives OpenFlow events. It keeps one `SwitchSession` per connected
datapath and is the `Fabric` the service uses: `apply(dpids)` returns once those switches hold the
desired flows (barrier acknowledged). Packet-ins exist only for what the datapath cannot do: the
pipeline sends the first frames of registered nodes whose port is still unknown (truncated), and we
learn the node's port from them (on the `Locator`'s thread: this one must never wait); everything
else is dropped in the datapath. They are rate-limited per switch, so a flood cannot starve the
controller.

A handler that raises is a bug: `kill_on_exception` (faucet's recipe) logs it with the event and the
switch named and ends the process with EX_SOFTWARE, for its supervisor to restart; a restart costs
the data plane nothing (the switches keep their flows, the store is durable). Carrying on instead
would leave a switch session half set up or a reply never routed, and ADDs timing out with no
word of why. What a handler gets from outside is read so that it cannot raise: a packet-in's frame
comes from a port a pod may share, so only its Ethernet source is read, by hand (`frame_source`),
never through a full packet parser.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controller.errors import SwitchUnavailable
from controller.locator import Locator
from controller.switch import Roles, SessionStatus, SwitchSession
from openflow.flows import Flow
from openflow.model import SwitchState

LOG = logging.getLogger("underlay.ofapp")
ANY_STATE = [CONFIG_DISPATCHER, MAIN_DISPATCHER]
EX_SOFTWARE = 70  # sysexits.h: internal software error


def kill_on_exception(handler: Callable[..., None]) -> Callable[..., None]:
    """A handler bug stops the process loudly (os-ken would log it and go on): the traceback, with
    the handler, event and switch named, then exit EX_SOFTWARE. os._exit, not SystemExit: this runs
    on os-ken's event thread, where an exception would only end that thread."""

    @functools.wraps(handler)
    def wrapper(self: Any, ev: Any) -> None:
        try:
            handler(self, ev)
        except Exception:
            datapath = getattr(ev, "datapath", None) or getattr(getattr(ev, "msg", None), "datapath", None)
            LOG.critical("event=handler-bug handler=%s of=%s switch=%s: stopping the controller", handler.__name__,
                         type(ev).__name__, getattr(datapath, "id", None), exc_info=True)
            logging.shutdown()
            os._exit(EX_SOFTWARE)

    return wrapper


def frame_source(frame: bytes) -> str | None:
    """The source MAC of an Ethernet frame, or None if it is too short to have one."""
    return ":".join(f"{octet:02x}" for octet in frame[6:12]) if len(frame) >= 14 else None


class TokenBucket:
    """At most `rate` events per second, `burst` at once (time passed in, for tests)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class UnderlayApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, underlay: Any = None, roles: Roles | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = underlay  # controller.service.Service, injected as an os-ken context (a follower: None)
        self.roles = roles  # with leader election: which OpenFlow role to claim (controller/leading.py)
        self.sessions: dict[int, SwitchSession] = {}
        self._buckets: dict[int, TokenBucket] = {}
        self._lock = threading.Lock()
        self.counters = {"packet_ins": 0, "packet_ins_dropped": 0}
        self._locator = Locator(lambda mac, dpid, port: self.service.node_located(mac, dpid=dpid, port=port),
                                self._request_convergence)

    # the Fabric protocol -------------------------------------------------------------------
    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        for dpid in sorted(set(dpids)):
            with self._lock:
                session = self.sessions.get(dpid)
            if session is None:
                raise SwitchUnavailable(f"switch {dpid:016x} is not connected")
            session.converge(timeout=timeout)

    def seen(self, dpids: Iterable[int], *, cookie: int, mac: str | None = None, ip: str | None = None
             ) -> dict[int, tuple[int, ...]]:
        found = {}
        for dpid in sorted(set(dpids)):
            with self._lock:
                session = self.sessions.get(dpid)
            if session is None:
                raise SwitchUnavailable(f"switch {dpid:016x} is not connected: cannot tell what it has seen")
            found[dpid] = session.seen(cookie=cookie, mac=mac, ip=ip)
        return found

    def connected(self) -> list[int]:
        with self._lock:
            return sorted(self.sessions)

    def session_status(self, dpid: int) -> SessionStatus | None:
        """The switch's session as operators see it (GET /v1/switches); None: not connected."""
        with self._lock:
            session = self.sessions.get(dpid)
        return None if session is None else session.status()

    def resync(self, dpid: int) -> None:
        """Switch `dpid` is read again and repaired by its worker (SwitchSession.resync)."""
        with self._lock:
            session = self.sessions.get(dpid)
        if session is None:
            raise SwitchUnavailable(f"switch {dpid:016x} is not connected: it cannot be repaired now")
        session.resync()

    def read_flows(self, dpid: int, *, cookie: int) -> frozenset[Flow]:
        """The flows switch `dpid` holds under `cookie`, read through its session (flow stats)."""
        with self._lock:
            session = self.sessions.get(dpid)
        if session is None:
            raise SwitchUnavailable(f"switch {dpid:016x} is not connected: its flows cannot be read")
        return session.read_flows(cookie=cookie)

    def stats(self) -> dict[str, int]:
        with self._lock:
            sessions = list(self.sessions.values())
        return {
            **self.counters,
            "packet_ins_dropped": self.counters["packet_ins_dropped"] + self._locator.dropped,
            "flow_mods": sum(s.counters.flow_mods for s in sessions),
            "bundles": sum(s.counters.bundles for s in sessions),
        }

    # connection lifecycle ------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @kill_on_exception
    def state_change(self, ev: Any) -> None:
        datapath = ev.datapath
        if datapath.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self._connect(datapath)
        elif ev.state == DEAD_DISPATCHER:
            self._disconnect(datapath)

    def _connect(self, datapath: Any) -> None:
        session = SwitchSession(datapath, self._state_of, roles=self.roles)
        with self._lock:
            old = self.sessions.pop(datapath.id, None)
            self.sessions[datapath.id] = session
            self._buckets[datapath.id] = TokenBucket(rate=20, burst=50)
        if old:
            old.close()
        LOG.info("switch=%016x event=connected address=%s", datapath.id, datapath.address)
        session.start()

    def _disconnect(self, datapath: Any) -> None:
        with self._lock:
            session = self.sessions.get(datapath.id)
            if session is None or session.datapath is not datapath:
                return  # a newer connection of the same switch replaced this one
            del self.sessions[datapath.id]
        session.close()
        LOG.info("switch=%016x event=disconnected", datapath.id)

    def _state_of(self, dpid: int) -> SwitchState:
        state: SwitchState = self.service.desired_state(dpid)
        return state

    # replies -------------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @kill_on_exception
    def flow_stats_reply(self, ev: Any) -> None:
        msg = ev.msg
        self._route(msg, more=bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    @kill_on_exception
    def role_reply(self, ev: Any) -> None:
        self._route(ev.msg)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @kill_on_exception
    def barrier_reply(self, ev: Any) -> None:
        self._route(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, ANY_STATE)
    @kill_on_exception
    def error(self, ev: Any) -> None:
        msg = ev.msg
        reason = f"OpenFlow error type={msg.type} code={msg.code}"
        LOG.warning("switch=%s event=error xid=%s %s", msg.datapath.id, msg.xid, reason)
        self._route(msg, error=reason)

    def _route(self, msg: Any, **kwargs: Any) -> None:
        with self._lock:
            session = self.sessions.get(msg.datapath.id)
        if session is not None and session.datapath is msg.datapath:
            session.on_reply(msg, **kwargs)

    # learning node ports -------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @kill_on_exception
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dpid = msg.datapath.id
        if self.service is None:
            return  # a follower (its connection not yet SLAVE): the leader learns from its own copy
        with self._lock:
            bucket = self._buckets.get(dpid)
            self.counters["packet_ins"] += 1
            allowed = bucket is not None and bucket.take(time.monotonic())
            if not allowed:
                self.counters["packet_ins_dropped"] += 1
        if not allowed:
            return
        source = frame_source(bytes(msg.data))
        if source is None:
            return
        self._locator.submit(source, dpid=dpid, port=msg.match["in_port"])

    def wake(self) -> None:
        """The wanted role changed (controller/leading.py): every session claims it now."""
        with self._lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            session.request()

    def _request_convergence(self, dpid: int) -> None:
        with self._lock:
            session = self.sessions.get(dpid)
        if session is not None:
            session.request()

    def close(self) -> None:
        self._locator.close()
        with self._lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            session.close()
