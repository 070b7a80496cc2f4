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

from controller import lldp
from controller.errors import SwitchUnavailable
from controller.links import LinkMonitor
from controller.locator import Locator
from controller.metrics import ControllerMetrics, SwitchView, packet_in_reason, switch_label
from controller.switch import Roles, SessionStatus, SwitchSession
from openflow.flows import Flow
from controller.topology import Forwarding, LinkEnd
from openflow.lldp import ETH_TYPE_LLDP
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


_LLDP = ETH_TYPE_LLDP.to_bytes(2, "big")


def _is_lldp(data: Any) -> bool:
    return bytes(data[12:14]) == _LLDP


def _live(port: Any, ofp: Any) -> bool:
    """A port with carrier and not administratively down (OpenFlow 1.3 ofp_port state and config)."""
    return not (port.state & ofp.OFPPS_LINK_DOWN or port.config & ofp.OFPPC_PORT_DOWN)


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

    def __init__(self, *args: Any, underlay: Any = None, roles: Roles | None = None, links: LinkMonitor | None = None,
                 metrics: ControllerMetrics | None = None, audit_interval: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self.audit_interval = audit_interval  # seconds between each switch's drift audits (0: none)
        self.service = underlay  # controller.service.Service, injected as an os-ken context (a follower: None)
        self.roles = roles  # with leader election: which OpenFlow role to claim (controller/leading.py)
        self.links = links  # the fabric's links (controller/links.py): told of connects, port status, LLDP
        if links is not None:
            links.on_change = self._topology_changed
        self.sessions: dict[int, SwitchSession] = {}
        self._buckets: dict[int, TokenBucket] = {}
        self._lldp_buckets: dict[int, TokenBucket] = {}
        self._lock = threading.Lock()
        self.counters = {"packet_ins": 0, "packet_ins_dropped": 0, "lldp_packet_ins": 0}
        self._locator = Locator(lambda mac, dpid, port: self.service.node_located(mac, dpid=dpid, port=port),
                                self._request_convergence)

    # the Fabric protocol -------------------------------------------------------------------
    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        with self._lock:
            sessions = [(dpid, self.sessions.get(dpid)) for dpid in sorted(set(dpids))]
        if len(sessions) > 1:  # a fabric's switches converge at once, not each after the one before
            for _, waiting in sessions:
                if waiting is not None:
                    waiting.request()
        for dpid, session in sessions:
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

    def views(self) -> list[SwitchView]:
        """The connected switches as a metrics scrape sees them."""
        with self._lock:
            sessions = list(self.sessions.values())
        return [session.view() for session in sessions]

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
        session = SwitchSession(datapath, self._state_of, roles=self.roles, metrics=self.metrics,
                                audit_interval=self.audit_interval)
        with self._lock:
            old = self.sessions.pop(datapath.id, None)
            self.sessions[datapath.id] = session
            self._buckets[datapath.id] = TokenBucket(rate=20, burst=50)
            ports = len(datapath.ports)  # LLDP: about one frame a second per link port, with room
            self._lldp_buckets[datapath.id] = TokenBucket(rate=10 + 4 * ports, burst=20 + 8 * ports)
        if old:
            old.close()
        LOG.info("switch=%016x event=connected address=%s", datapath.id, datapath.address)
        if self.links is not None:  # first: a link port found down changes the forwarding it converges to
            self.links.switch_connected(datapath.id, now=time.monotonic(),
                                        ports={number: _live(port, datapath.ofproto) for number, port
                                               in datapath.ports.items()})
        session.start()

    def _disconnect(self, datapath: Any) -> None:
        with self._lock:
            session = self.sessions.get(datapath.id)
            if session is None or session.datapath is not datapath:
                return  # a newer connection of the same switch replaced this one
            del self.sessions[datapath.id]
        session.close()
        LOG.info("switch=%016x event=disconnected", datapath.id)
        if self.links is not None:
            self.links.switch_disconnected(datapath.id, now=time.monotonic())

    def _state_of(self, dpid: int) -> SwitchState:
        state: SwitchState = self.service.desired_state(dpid)
        return state

    # replies -------------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @kill_on_exception
    def flow_stats_reply(self, ev: Any) -> None:
        msg = ev.msg
        self._route(msg, more=bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    @kill_on_exception
    def aggregate_stats_reply(self, ev: Any) -> None:
        self._route(ev.msg)

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
        self.metrics.packet_ins.labels(switch_label(dpid), packet_in_reason(msg.cookie)).inc()
        with self._lock:
            bucket = (self._lldp_buckets if _is_lldp(msg.data) else self._buckets).get(dpid)
            self.counters["packet_ins"] += 1
            allowed = bucket is not None and bucket.take(time.monotonic())
            if not allowed:
                self.counters["packet_ins_dropped"] += 1
        if not allowed:
            return
        frame, at = bytes(msg.data), LinkEnd(dpid, msg.match["in_port"])
        if self.links is not None and _is_lldp(frame) and self.links.watches(at):
            self._heard(at, frame)
            return
        source = frame_source(frame)
        if source is None:
            return
        self._locator.submit(source, dpid=dpid, port=msg.match["in_port"])

    # the fabric's links -------------------------------------------------------------------
    def _heard(self, at: LinkEnd, frame: bytes) -> None:
        """An LLDP frame from a link port: ours (some switch port sent it) goes to the monitor."""
        assert self.links is not None
        with self._lock:
            self.counters["lldp_packet_ins"] += 1
        sender = lldp.parse(frame)
        if sender is None:
            LOG.debug("switch=%016x event=foreign-lldp port=%d", at.dpid, at.port)
            return
        self.links.heard(at, sender, now=time.monotonic())

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @kill_on_exception
    def port_status(self, ev: Any) -> None:
        """A port went down or up, or was added or deleted: the monitor decides what it means."""
        msg = ev.msg
        if self.links is None:
            return
        ofp = msg.datapath.ofproto
        live = msg.reason != ofp.OFPPR_DELETE and _live(msg.desc, ofp)
        self.links.port_changed(LinkEnd(msg.datapath.id, msg.desc.port_no), live=live, now=time.monotonic())

    def send_frame(self, end: LinkEnd, frame: bytes) -> None:
        """Send `frame` out of a switch port (the LLDP prober, controller/links.py). A follower
        sends nothing: its connections are SLAVE, the switch would refuse."""
        if self.service is None:
            return
        with self._lock:
            session = self.sessions.get(end.dpid)
        if session is not None:
            session.packet_out(end.port, frame)

    def _topology_changed(self, forwarding: Forwarding) -> None:
        """The used links changed: the service computes with the new forwarding, every switch converges."""
        service = self.service
        if service is None:
            return  # a follower writes nothing; it takes the forwarding when it leads
        service.set_forwarding(forwarding)
        self.wake()

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
