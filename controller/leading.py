"""One controller replica of two: follow, lead, step down. The wiring between the Lease election
(controller/leader.py), the switches' OpenFlow roles (controller/switch.py) and the REST API.

A replica starts as a follower: it holds an OpenFlow connection to every switch as SLAVE (it may
read, it never writes), has no store or service of its own, and answers the REST API only with
liveness (`/v1/health`), not-ready (`/v1/ready`: 503) and, for anything else, 503 with a
Retry-After naming the leader, so an agent that reached it retries. In a cluster the Service
routes agents by readiness, i.e. to the leader.

On winning the Lease it loads the state from the API (`promote`: the store, the service, the REST
API), claims MASTER on every switch with the Lease's generation id, and converges them, which
sends nothing when nothing changed (the zero-churn rule holds across a failover). Then it is ready.

It stops leading when its renewals fail past the renew deadline, or when a switch refuses its
MASTER claim as stale and the Lease confirms that a newer leader exists (split brain; see `stale`). Writing stops at once (`may_write`,
asked before every bundle), and the process exits (EX_TEMPFAIL) for its supervisor to restart it
as a follower: what a deposed leader holds in memory may be outdated by the new one's writes, and
a fresh start reloads it, as client-go's controllers do. A restart costs the data plane nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller.errors import ControllerError
from controller.leader import Election, Elector, Timing
from controller.logs import kv
from controller.switch import Role

LOG = logging.getLogger("underlay.leading")
EX_TEMPFAIL = 75  # sysexits.h: try again later (a supervisor restarts us as a follower)
Wsgi = Callable[[Mapping[str, Any], Callable[..., Any]], Iterable[bytes]]


def _leave(status: int) -> None:
    """Exit now, from whichever thread: os._exit, as SystemExit would only end this thread."""
    logging.shutdown()
    os._exit(status)


def _thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="take-over", daemon=True).start()


def identity(environ: Mapping[str, str] = os.environ) -> str:
    """This replica's name in the Lease: its pod's (downward API `POD_NAME`), else the host's."""
    return environ.get("POD_NAME") or socket.gethostname()


class Leadership:
    """The election's listener, the switch sessions' `Roles`, and the REST API's gate."""

    def __init__(self, name: str, timing: Timing, *, promote: Callable[[int], Wsgi], wake: Callable[[], None],
                 exit: Callable[[int], None] = _leave,
                 spawn: Callable[[Callable[[], None]], None] = _thread) -> None:
        """`promote(generation)` loads the state and returns the REST API to serve as leader, in a
        thread of its own (`spawn`): the election keeps renewing meanwhile, however long a large
        state takes to load. `wake()` tells the switch sessions that the wanted role changed."""
        self.timing = timing
        self.elector = Elector(name, timing)
        self.election: Election | None = None
        self._promote, self._wake, self._exit, self._spawn = promote, wake, exit, spawn
        self._role: Role | None = None
        self._api: Wsgi | None = None
        self._lock = threading.Lock()
        self._outbidding = threading.Lock()

    def start(self) -> None:
        """Run `self.election` (set by the caller: on `self.elector`, `self` listening) in a thread."""
        assert self.election is not None
        threading.Thread(target=self.election.run, name="leader-election", daemon=True).start()

    # the election's listener -------------------------------------------------------------------
    def following(self, holder: str | None, generation: int) -> None:
        with self._lock:
            self._role = Role(master=False, generation=generation)
        self._wake()

    def started_leading(self, generation: int) -> None:
        self._spawn(lambda: self._take_over(generation))

    def _take_over(self, generation: int) -> None:
        try:
            api = self._promote(generation)
        except Exception as err:  # the state cannot be loaded: a fresh start tries again, as a follower
            self._step_down(f"cannot take over: {type(err).__name__}: {err}")
            return
        with self._lock:
            self._role, self._api = Role(master=True, generation=generation), api
        self._wake()

    def stopped_leading(self, reason: str) -> None:
        self._step_down(reason)

    # the switch sessions' Roles -----------------------------------------------------------------
    def wanted(self) -> Role | None:
        with self._lock:
            return self._role

    def may_write(self) -> bool:
        return self._api is not None and self.election is not None and self.election.leading()

    def stale(self, dpid: int, reason: str, *, generation: int | None) -> None:
        """A switch holds a larger generation id than ours. Either another leader exists (split
        brain: step down), or the Lease lost its history (deleted, created again): then a
        conditional write of the Lease, which only the current holder can make, raises ours past
        the switch's, and the sessions claim master again. One switch at a time."""
        with self._outbidding:
            wanted = self.wanted()
            if wanted is not None and generation is not None and wanted.master and wanted.generation > generation:
                return  # raised already, for another switch
            try:
                if generation is None or self.election is None:
                    raise ControllerError("the switch did not say which generation it has seen")
                raised = self.election.outbid(generation)
            except ControllerError as err:
                self._step_down(f"{reason}; {err}")
                return
            with self._lock:
                self._role = Role(master=True, generation=raised)
        LOG.warning(kv("generation-raised", identity=self.elector.identity, generation=raised, reason=reason))
        self._wake()

    def release(self) -> None:
        """On a clean stop (SIGTERM, e.g. a rolling update): stop writing, then hand the Lease over
        at once. A failure only costs the follower the rest of the lease duration."""
        with self._lock:
            self._role, self._api = None, None
        election = self.election
        record = None if election is None else election.elector.release()
        if election is None or record is None:
            return
        try:
            election.lock.update(record, acquired=False, timeout=self.timing.retry_period)
            LOG.info(kv("released", identity=self.elector.identity))
        except ControllerError as err:
            LOG.warning(kv("release-failed", identity=self.elector.identity, error=err))

    def _step_down(self, reason: str) -> None:
        """Write nothing more, and leave (see the module's docstring)."""
        with self._lock:
            self._role, self._api = None, None
        LOG.critical(kv("stepping-down", identity=self.elector.identity, reason=reason))
        self._exit(EX_TEMPFAIL)

    # the REST API -------------------------------------------------------------------------------
    @property
    def epoch(self) -> str | None:
        """The leader's epoch, for the HTTP server's own answers (controller/httpd.py)."""
        return getattr(self._api, "epoch", None)

    def __call__(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI app: the leader's API once promoted and while leading; a follower's answers else."""
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        api, leading = self._api, self.may_write()
        if path == "/v1/ready" and method == "GET":
            if leading:
                return _answer(start_response, 200, {"status": "ready", "leader": self.elector.identity,
                                                     "epoch": self.epoch})
            return self._not_leader(start_response)
        if api is not None and leading:
            return api(environ, start_response)
        if path == "/v1/health" and method == "GET":  # liveness: a follower is alive and well
            return _answer(start_response, 200, {"status": "ok", "role": "follower", "leader": self.elector.holder})
        return self._not_leader(start_response)

    def _not_leader(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        retry = str(max(1, math.ceil(self.timing.retry_period)))
        return _answer(start_response, 503, {"error": f"not the leader: {self.elector.holder or 'none yet'}"},
                       headers=[("Retry-After", retry)])


def _answer(start_response: Callable[..., Any], status: int, body: dict[str, Any], *,
            headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """A follower's answers carry no `epoch`: agents take a new epoch for a restarted controller."""
    payload = json.dumps(body).encode()
    start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("Cache-Control", "no-store"),
        *headers])
    return [payload]
