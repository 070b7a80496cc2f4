"""Learning node ports off the OpenFlow event thread: one worker, frames handled in arrival order.

A node-learning packet-in becomes located → stored (an fsync'd commit) → switches converged. The
OpenFlow event thread must never wait for that: it is the thread that delivers the barrier replies
every convergence (and so every pod ADD) waits for. The event thread only `submit`s (mac, dpid,
port); one worker runs the step for each in turn, so the frames of one node are decided in the
order they arrived (a later frame never loses to an earlier one). The queue is bounded: the
packet-ins feeding it are rate-limited per switch, and the same frame already waiting is not queued
twice (a node's burst of ARPs is one decision); a full queue drops and counts.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from controller.logs import kv
from controller.metrics import switch_label

LOG = logging.getLogger("underlay.locator")
Sighting = tuple[str, int, int]  # (source MAC, dpid, in_port)
_STOP = ("", -1, -1)


class Locator:
    def __init__(self, locate: Callable[[str, int, int], frozenset[int]], converge: Callable[[int], None], *,
                 capacity: int = 256) -> None:
        """`locate(mac, dpid, port)` decides and stores (Service.node_located) and returns the
        switches whose desired state changed; `converge(dpid)` asks one to converge, without waiting."""
        self._locate, self._converge = locate, converge
        self._queue: queue.Queue[Sighting] = queue.Queue(capacity)
        self._waiting: set[Sighting] = set()
        self._lock = threading.Lock()
        self.dropped = 0
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="locator", daemon=True)
        self._worker.start()

    def submit(self, mac: str, *, dpid: int, port: int) -> bool:
        """Queue a sighting without waiting; False when it was dropped (queue full)."""
        sighting = (mac.lower(), dpid, port)
        with self._lock:
            if sighting in self._waiting:
                return True
            try:
                self._queue.put_nowait(sighting)
            except queue.Full:
                self.dropped += 1
                return False
            self._waiting.add(sighting)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop (once: a second call only waits)."""
        with self._lock:
            closing, self._closing = not self._closing, True
        if closing:
            self._queue.put(_STOP, timeout=timeout)
        self._worker.join(timeout)

    def _run(self) -> None:
        while (sighting := self._queue.get()) != _STOP:
            with self._lock:
                self._waiting.discard(sighting)
            mac, dpid, port = sighting
            try:
                changed = self._locate(mac, dpid, port)
                for affected in sorted(changed):
                    self._converge(affected)
            except Exception:  # a bug or a store failure: log it with the frame named, keep serving
                LOG.exception(kv("locating failed", mac=mac, switch=switch_label(dpid), port=port))
