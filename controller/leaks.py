"""The leak collector: addresses whose pod is gone go back to their pool, and nothing else does.

A pod's address is normally released by the CNI DEL its node's runtime sends. When that never comes
(the node died, the agent was down while the pod went), the address leaks. Peers' collectors have
freed live addresses (Calico #5044, Whereabouts #207, Kube-OVN #4304): from a stale cache, on an API
error read as "not found", or racing an ADD still in progress. So this one is slow and two-phased:

1. Every pass (default every 5 minutes) looks up, in the watch cache, the pod of each allocation
   older than the grace period, and marks as suspect those whose pod is gone or is another pod now
   (same name, another UID: the allocation belonged to a pod that was deleted and re-created).
2. The next pass reads each suspect's pod from the API server itself (`pod_live`, uncached) and
   releases the address only if that read agrees. An API error keeps the address (and the suspicion,
   for the next pass); an allocation that changed meanwhile is judged afresh.

Only allocations that carry a pod UID are judged: those came from Kubernetes (the CNI request had
K8S_POD_UID). Others are the agents' business (their full-state sync). A StatefulSet pod's
allocation is released like any other, but its sticky reservation stays: the address then waits for
the pod's successor (`Reserved`); the reservation itself ends only by the StatefulSet rules
(controller/sticky.py), confirmed on two passes as well. The reason is recorded with the release.

`plan`, `judge` and `confirmed` decide (pure); `LeakCollector` reads, decides and acts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from controller.errors import ControllerError, TemporaryError
from controller.logs import kv
from controller.sticky import parse_key, why_stale

if TYPE_CHECKING:
    from controller.intent import ClusterView
    from controller.service import Service
    from controller.store import Pod

LOG = logging.getLogger("underlay.leaks")
Key = tuple[str, str]
K = TypeVar("K")
INTERVAL = 300.0
GRACE = 120.0


@dataclass(frozen=True)
class Suspect:
    """An allocation the cache says is leaked, as it was when marked."""

    pod: Pod
    reason: str


@dataclass(frozen=True)
class Plan:
    confirm: tuple[Suspect, ...]  # marked by the last pass, allocated as they were: read each live
    check: tuple[Pod, ...]  # the others old enough to judge: look each up in the cache


def judge(allocation: Pod, pod: Mapping[str, Any] | None) -> str | None:
    """Why `allocation`'s pod is gone (what the release records), or None while it is there."""
    if pod is None:
        return f"pod {allocation.owner} is gone"
    uid = (pod.get("metadata") or {}).get("uid")
    if uid != allocation.uid:
        return f"pod {allocation.owner} is another pod now (uid {uid}; the address was given to uid {allocation.uid})"
    return None


def plan(suspects: Mapping[Key, Suspect], allocations: Iterable[Pod], *, now: float, grace: float) -> Plan:
    """What this pass reads: live for the last pass's suspects still allocated as they were, from
    the cache for every other Kubernetes allocation older than `grace`."""
    confirm, check = [], []
    for allocation in allocations:
        if allocation.uid is None or now - allocation.created_at < grace:
            continue
        suspect = suspects.get(allocation.key)
        if suspect is not None and _same(suspect.pod, allocation):
            confirm.append(suspect)
        else:
            check.append(allocation)
    return Plan(tuple(confirm), tuple(check))


def _same(one: Pod, other: Pod) -> bool:
    return (one.ip, one.uid, one.created_at) == (other.ip, other.uid, other.created_at)


def confirmed(previous: Mapping[K, str], current: Mapping[K, str]) -> tuple[dict[K, str], dict[K, str]]:
    """(what was found on this pass and the last: act on it, what was found first now: wait)."""
    return ({k: r for k, r in current.items() if k in previous}, {k: r for k, r in current.items() if k not in previous})


@dataclass(frozen=True)
class Report:
    released: tuple[tuple[Pod, str], ...] = ()
    kept: tuple[tuple[Pod, str], ...] = ()  # suspects kept because the live read failed
    suspects: int = 0  # marked by this pass, to be confirmed by the next
    forgotten: tuple[tuple[str, str], ...] = ()  # sticky reservations dropped, with why


class LeakCollector:
    """The two-pass collector over a service and the cluster (state: the last pass's suspects)."""

    def __init__(self, service: Service, cluster: ClusterView, *, now: Callable[[], float], grace: float = GRACE) -> None:
        self.service, self.cluster, self.now, self.grace = service, cluster, now, grace
        self._suspects: dict[Key, Suspect] = {}
        self._stale: dict[str, str] = {}

    def run_pass(self) -> Report:
        todo = plan(self._suspects, self.service.allocations(), now=self.now(), grace=self.grace)
        released, kept, suspects = [], [], {}
        for suspect in todo.confirm:
            allocation = suspect.pod
            try:
                live = self.cluster.pod_live(allocation.namespace, allocation.name)
            except TemporaryError as err:
                kept.append((allocation, str(err)))
                suspects[allocation.key] = suspect
                continue
            reason = judge(allocation, live)
            if reason is not None and self.service.release_leaked(allocation, reason=reason):
                released.append((allocation, reason))
        for allocation in todo.check:
            try:
                reason = judge(allocation, self.cluster.pod(allocation.namespace, allocation.name))
            except TemporaryError:
                continue  # judged on a later pass
            if reason is not None:
                suspects[allocation.key] = Suspect(allocation, reason)
        self._suspects = suspects
        forgotten = self._reservations()
        report = Report(tuple(released), tuple(kept), len(suspects), forgotten)
        self._log(report)
        return report

    def _reservations(self) -> tuple[tuple[str, str], ...]:
        """Sticky reservations whose StatefulSet no longer keeps their ordinal, on two passes."""
        stale = {}
        for key in self.service.reservations():
            member = parse_key(key)
            if member is None:
                continue
            try:
                reason = why_stale(member, self.cluster.statefulset(member.namespace, member.statefulset))
            except TemporaryError:
                continue
            if reason is not None:
                stale[key] = reason
        now, self._stale = confirmed(self._stale, stale)
        return tuple((key, reason) for key, reason in sorted(now.items()) if self.service.forget_sticky(key, reason=reason))

    def _log(self, report: Report) -> None:
        for allocation, reason in report.released:
            LOG.info(kv("leaked address released", ip=allocation.ip, pod=allocation.owner, reason=reason))
        for allocation, error in report.kept:
            LOG.warning(kv("leak suspect kept", ip=allocation.ip, pod=allocation.owner, error=error))
        for key, reason in report.forgotten:
            LOG.info(kv("sticky reservation dropped", key=key, reason=reason))

    def run(self, stop: threading.Event, *, interval: float = INTERVAL) -> None:
        """Pass after pass until `stop` is set (the controller's thread for it)."""
        repeat(self.run_pass, stop, interval=interval, what="leak collector")


def repeat(run_pass: Callable[[], object], stop: threading.Event, *, interval: float, what: str) -> None:
    """`run_pass` every `interval` seconds until `stop`; a pass the store refused is logged, and the
    next one tries again."""
    while not stop.wait(interval):
        try:
            run_pass()
        except ControllerError as err:
            LOG.warning(kv(f"{what} pass failed", error=err))
