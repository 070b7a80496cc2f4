"""Which inter-switch links are up, from what the switches say; the fabric's `Forwarding` follows.

`LinkMonitor` keeps the evidence per link end and decides each configured link's state:

    up           both ends heard the other's LLDP frame within `misses` intervals: used
    unconfirmed  both ports live, both switches connected, not (yet) both heard: not used, except
                 right after the controller starts (below)
    down         a port down or deleted (port status), a switch disconnected (echo timeout), or the
                 LLDP frames stopped: not used
    miscabled    an end hears another switch port than the config names (WARNING naming both ends,
                 shown in `status()`): not used until it hears the right one again

Events come from the OpenFlow app (`switch_connected`, `switch_disconnected`, `port_changed`,
`heard`) and from the prober's ticks (`tick`: what to send now, and expiry); each takes the time
(`now`, monotonic seconds) so tests drive a clock by hand. Whenever the set of used links changes
the `Forwarding` is computed again (controller/topology.py) and `on_change(forwarding)` is called,
outside the monitor's lock and in order: the service reconverges every switch with it.

Starting up: the switches still hold the flows of the last controller's forwarding, and a restart
must change none (zero flow-mods). So a link nobody has said anything about yet counts as up until
both its switches have been connected for `misses` intervals (at most `connect_grace` seconds after
the start): by then its LLDP frames have confirmed it, or it goes down like any other. Any evidence
(a port down, a disconnect, a frame from the wrong port) ends this benefit of the doubt at once.

`LinkProber` is the I/O around it: a thread that asks the monitor every interval what to send and
sends it through the OpenFlow app.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import lldp
from controller.config import Config
from controller.logs import kv
from controller.topology import Forwarding, Link, LinkEnd, compute

LOG = logging.getLogger("underlay.links")
INTERVAL = 1.0  # seconds between two LLDP frames out of one port
MISSES = 3  # intervals without a frame before a link is down
CONNECT_GRACE = 30.0  # seconds after the start a switch may take to connect before its links are down


class LinkState(enum.Enum):
    UP = "up"
    UNCONFIRMED = "unconfirmed"
    DOWN = "down"
    MISCABLED = "miscabled"


@dataclass
class _End:
    """What is known about one end: its port (live until told otherwise) and the frames it heard."""

    live: bool = True
    heard_at: float | None = None  # last frame from the configured far end
    wrong: LinkEnd | None = None  # the last other sender it heard, while that is recent
    wrong_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    state: LinkState
    used: bool
    reason: str


_ASSUMED = Verdict(LinkState.UNCONFIRMED, True, "assumed up at start, not confirmed yet")


class LinkMonitor:
    """The live state of the configured links (thread-safe; pure apart from the lock)."""

    def __init__(self, links: Iterable[Link], switches: Mapping[int, str | None], *, now: float,
                 on_change: Callable[[Forwarding], None] | None = None, interval: float = INTERVAL,
                 misses: int = MISSES, connect_grace: float = CONNECT_GRACE) -> None:
        self.links = tuple(sorted(set(links)))
        self.names = dict(switches)
        self.on_change = on_change
        self.interval, self.dead = interval, interval * misses
        self._far = {end: link.far(end) for link in self.links for end in link.ends}
        self._link_of = {end: link for link in self.links for end in link.ends}
        self._lock = threading.Lock()
        self._notify_lock = threading.Lock()
        self._wake = threading.Event()
        self._connected: dict[int, float] = {}  # dpid -> since when
        self.reset(now, connect_grace=connect_grace)

    def reset(self, now: float, *, connect_grace: float = CONNECT_GRACE) -> None:
        """Forget all evidence but which switches are connected, as at a start (a follower that
        becomes the leader: it sent nothing and heard nothing while it followed)."""
        with self._lock:
            self._started, self._connect_grace = now, connect_grace
            self._ends = {end: _End() for end in self._far}
            self._connected = {dpid: now for dpid in self._connected}
            self._fresh = set(self.links)  # nothing said about them yet: the benefit of the doubt
            self._verdicts = {link: _ASSUMED for link in self.links}
            self._since = {link: now for link in self.links}
            self._forwarding = self._compute()
            self._notified: Forwarding | None = self._forwarding

    def watches(self, end: LinkEnd) -> bool:
        """`end` is a configured link port: LLDP frames arriving there are the monitor's."""
        return end in self._far

    @property
    def forwarding(self) -> Forwarding:
        with self._lock:
            return self._forwarding

    # events --------------------------------------------------------------------------------
    def switch_connected(self, dpid: int, *, now: float, ports: Mapping[int, bool] | None = None) -> None:
        """`ports`: each port's liveness as the switch described them at connect (missing: gone)."""
        with self._lock:
            self._connected[dpid] = now
            for end, state in self._ends.items():
                if end.dpid == dpid:
                    state.heard_at = None
                    state.live = ports is None or ports.get(end.port, False)
                    if not state.live:
                        self._fresh.discard(self._link_of[end])
        self._wake.set()
        self._update(now)

    def switch_disconnected(self, dpid: int, *, now: float) -> None:
        with self._lock:
            self._connected.pop(dpid, None)
            for end, state in self._ends.items():
                if dpid in (end.dpid, self._far[end].dpid):
                    state.heard_at = None  # both directions are confirmed again once it is back
                    self._fresh.discard(self._link_of[end])
        self._update(now)

    def port_changed(self, end: LinkEnd, *, live: bool, now: float) -> None:
        """A port status: `live` is False for a port down (carrier or admin) or deleted."""
        with self._lock:
            state = self._ends.get(end)
            if state is None or state.live == live:
                return
            state.live = live
            if not live:
                self._fresh.discard(self._link_of[end])
                state.heard_at = None
                self._ends[self._far[end]].heard_at = None
        if live:
            self._wake.set()  # probe now: the link is back as soon as both ends hear each other
        self._update(now)

    def heard(self, at: LinkEnd, sender: LinkEnd, *, now: float) -> None:
        """`at` received an LLDP frame that `sender` sent."""
        with self._lock:
            state = self._ends.get(at)
            if state is None:
                return  # not a link port (a stale flow): nothing to say about it
            if sender == self._far[at]:
                state.heard_at = now  # a wrong frame still recent keeps it miscabled (two talkers?)
            else:
                state.wrong, state.wrong_at = sender, now
                self._fresh.discard(self._link_of[at])
        self._update(now)

    def tick(self, now: float) -> list[tuple[LinkEnd, bytes]]:
        """Expire what is too old; return the frames to send now (from every live link port of a
        connected switch)."""
        self._update(now)
        with self._lock:
            return [(end, self._frame(end)) for end, state in sorted(self._ends.items())
                    if end.dpid in self._connected and state.live]

    def wait(self, timeout: float) -> None:
        """Until the next tick is due, or sooner when a port came up or a switch connected."""
        self._wake.wait(timeout)
        self._wake.clear()

    # deciding ------------------------------------------------------------------------------
    def _update(self, now: float) -> None:
        with self._lock:
            changed = []
            for link in self.links:
                verdict = self._decide(link, now)
                if verdict != self._verdicts[link]:
                    changed.append((link, self._verdicts[link], verdict))
                    self._verdicts[link], self._since[link] = verdict, now
            if any(old.used != new.used for _, old, new in changed):
                self._forwarding = self._compute()
        for link, old, new in changed:
            self._log(link, old, new)
        self._notify()

    def _decide(self, link: Link, now: float) -> Verdict:
        a, b = self._ends[link.a], self._ends[link.b]
        for end in link.ends:
            if end.dpid not in self._connected and link not in self._fresh:
                return Verdict(LinkState.DOWN, False, f"switch {end.dpid:#x} is not connected")
        for end, state in ((link.a, a), (link.b, b)):
            if not state.live:
                return Verdict(LinkState.DOWN, False, f"port {end} is down")
        for end, state in ((link.a, a), (link.b, b)):
            if state.wrong is not None and state.wrong_at is not None and now - state.wrong_at <= self.dead:
                return Verdict(LinkState.MISCABLED, False,
                               f"{end} hears {state.wrong}, expected {link.far(end)}")
        if all(s.heard_at is not None and now - s.heard_at <= self.dead for s in (a, b)):
            self._fresh.discard(link)
            return Verdict(LinkState.UP, True, "both ends hear each other")
        if link in self._fresh and now < self._grace_end(link):
            return _ASSUMED
        self._fresh.discard(link)
        silent = [end for end, s in ((link.a, a), (link.b, b)) if s.heard_at is None or now - s.heard_at > self.dead]
        if any(self._ends[end].heard_at is not None for end in silent):
            return Verdict(LinkState.DOWN, False, f"{silent[0]} heard no LLDP from {link.far(silent[0])} "
                                                  f"for {self.dead:g}s")
        return Verdict(LinkState.UNCONFIRMED, False, f"{silent[0]} has not heard {link.far(silent[0])} yet")

    def _grace_end(self, link: Link) -> float:
        since = [self._connected.get(end.dpid) for end in link.ends]
        connected = max(s for s in since if s is not None) if None not in since else self._started + self._connect_grace
        return min(connected, self._started + self._connect_grace) + self.dead

    def _compute(self) -> Forwarding:
        return compute(self.names, [link for link in self.links if self._verdicts[link].used], configured=self.links)

    def _notify(self) -> None:
        """`on_change` with the newest forwarding, once per change, never two at once."""
        with self._notify_lock:
            forwarding = self.forwarding
            if forwarding == self._notified:
                return
            self._notified = forwarding
            if self.on_change is not None:
                self.on_change(forwarding)

    def _log(self, link: Link, old: Verdict, new: Verdict) -> None:
        level = logging.WARNING if new.state is LinkState.MISCABLED else logging.INFO
        if new.state is not old.state or level == logging.WARNING and new.reason != old.reason:
            LOG.log(level, kv("link", link=str(link), names=self._names(link), state=new.state.value,
                              was=old.state.value, used=new.used, reason=new.reason))

    def _names(self, link: Link) -> str:
        return "-".join(self.names.get(end.dpid) or f"{end.dpid:#x}" for end in link.ends)

    def _frame(self, end: LinkEnd) -> bytes:
        return lldp.build(end, name=self.names.get(end.dpid))

    # reading -------------------------------------------------------------------------------
    def status(self, *, now: float) -> dict[str, Any]:
        """The topology as `GET /v1/topology` shows it: switches (name, connected), every
        configured link (its ends, state, whether used, why, for how long, whether in the tree),
        and the tree."""
        with self._lock:
            forwarding = self._forwarding
            links = [{
                "a": str(link.a), "b": str(link.b), "name": self._names(link),
                "state": self._verdicts[link].state.value, "used": self._verdicts[link].used,
                "in_tree": link in forwarding.tree, "reason": self._verdicts[link].reason,
                "seconds": round(max(now - self._since[link], 0.0), 1),
                **({"heard": {str(end): str(self._ends[end].wrong) for end in link.ends
                              if self._ends[end].wrong is not None}}
                   if self._verdicts[link].state is LinkState.MISCABLED else {}),
            } for link in self.links]
            switches = [{"dpid": f"{dpid:#x}", "name": self.names.get(dpid), "connected": dpid in self._connected,
                         "link_ports": sorted(forwarding.link_ports(dpid)),
                         "tree_ports": sorted(forwarding.tree_ports(dpid))}
                        for dpid in sorted({*self.names, *self._connected})]
        return {"switches": switches, "links": links,
                "tree": [{"a": str(link.a), "b": str(link.b)} for link in sorted(forwarding.tree)]}


class LinkProber:
    """The thread that sends each tick's LLDP frames through `send(end, frame)`."""

    def __init__(self, monitor: LinkMonitor, send: Callable[[LinkEnd, bytes], None], *,
                 clock: Callable[[], float]) -> None:
        self.monitor, self.send, self.clock = monitor, send, clock
        self.sent = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for end, frame in self.monitor.tick(self.clock()):
                self.send(end, frame)
                self.sent += 1
            self.monitor.wait(self.monitor.interval)


def links_monitor(config: Config, *, now: float) -> LinkMonitor:
    """The monitor of the config's links and switches (with no links: it only tells who is connected)."""
    return LinkMonitor(config.links, {dpid: switch.name for dpid, switch in config.switches.items()}, now=now)


def start_prober(monitor: LinkMonitor, send: Callable[[LinkEnd, bytes], None], stop: threading.Event
                 ) -> LinkProber | None:
    """The prober's thread, when there are links to probe."""
    if not monitor.links:
        return None
    prober = LinkProber(monitor, send, clock=time.monotonic)
    threading.Thread(target=prober.run, args=(stop,), name="lldp-prober", daemon=True).start()
    return prober
