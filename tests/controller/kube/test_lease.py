"""The election's Lease on the session's real API server (controller/kube/lease.py): what a
candidate writes is a Lease `kubectl` shows as client-go's would, writes are conditional, and two
running elections hand over when the leader stops."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controller.kube.client import Kube, Outdated
from controller.kube.lease import LEASES, KubeLease
from controller.leader import Election, Elector, LeaseRecord, Timing

FAST = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.2)


class Events:
    def __init__(self) -> None:
        self.led = threading.Event()
        self.generation: int | None = None
        self.followed: list[tuple[str | None, int]] = []
        self.stopped: str | None = None

    def started_leading(self, generation: int) -> None:
        self.generation = generation
        self.led.set()

    def following(self, holder: str | None, generation: int) -> None:
        self.followed.append((holder, generation))

    def stopped_leading(self, reason: str) -> None:
        self.stopped = reason


def start(kube: Kube, namespace: str, identity: str, timing: Timing = FAST) -> tuple[Election, Events, threading.Thread]:
    events = Events()
    election = Election(Elector(identity, timing), KubeLease(kube, namespace, "ctl"), events, clock=time.monotonic,
                        stop=threading.Event())
    thread = threading.Thread(target=election.run, daemon=True)
    thread.start()
    return election, events, thread


def test_a_created_lease_reads_as_kubernetes_writes_them(kube: Kube, k8s_namespace: str) -> None:
    lease = KubeLease(kube, k8s_namespace, "ctl", wall=lambda: 1700000000.5)
    assert lease.get() is None
    written = lease.create(LeaseRecord("ctl-a", 15), timeout=2)
    assert (written.holder, written.duration, written.transitions) == ("ctl-a", 15, 0)
    spec = kube.get(LEASES.path(namespace=k8s_namespace, name="ctl"))["spec"]
    assert spec == {"holderIdentity": "ctl-a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                    "acquireTime": "2023-11-14T22:13:20.500000Z", "renewTime": "2023-11-14T22:13:20.500000Z"}


def test_a_write_based_on_an_old_read_is_refused(kube: Kube, k8s_namespace: str) -> None:
    a, b = KubeLease(kube, k8s_namespace, "ctl"), KubeLease(kube, k8s_namespace, "ctl")
    a.create(LeaseRecord("ctl-a", 15), timeout=2)
    seen = b.get()
    assert seen is not None
    renewed = a.update(LeaseRecord("ctl-a", 15, version=seen.version), acquired=False, timeout=2)
    assert renewed.version != seen.version
    with pytest.raises(Outdated):
        b.update(LeaseRecord("ctl-b", 15, transitions=1, version=seen.version), acquired=True, timeout=2)
    assert a.get() == renewed  # acquireTime kept by a renewal, holder unchanged


def test_the_follower_takes_over_with_a_larger_generation_when_the_leader_stops(kube: Kube, k8s_namespace: str) -> None:
    a, a_events, a_thread = start(kube, k8s_namespace, "ctl-a")
    assert a_events.led.wait(10) and a_events.generation == 0
    b, b_events, b_thread = start(kube, k8s_namespace, "ctl-b")
    deadline = time.monotonic() + 10
    while ("ctl-a", 0) not in b_events.followed:
        assert time.monotonic() < deadline, b_events.followed
        time.sleep(0.05)
    assert not b_events.led.wait(FAST.lease_duration)  # a keeps renewing: b never leads
    a.stop.set()
    a_thread.join(5)
    stopped_at = time.monotonic()
    assert b_events.led.wait(FAST.lease_duration + 3) and b_events.generation == 1
    assert time.monotonic() - stopped_at >= FAST.lease_duration - FAST.retry_period
    assert kube.get(LEASES.path(namespace=k8s_namespace, name="ctl"))["spec"]["holderIdentity"] == "ctl-b"
    b.stop.set()
    b_thread.join(5)


def test_a_released_lease_is_taken_at_the_followers_next_try(kube: Kube, k8s_namespace: str) -> None:
    """A 60 s lease: b leads within 10 s only if a's release let it (not the lease's expiry)."""
    slow = Timing(lease_duration=60, renew_deadline=40, retry_period=0.2)
    a, a_events, a_thread = start(kube, k8s_namespace, "ctl-a", slow)
    assert a_events.led.wait(10)
    b, b_events, b_thread = start(kube, k8s_namespace, "ctl-b", slow)
    deadline = time.monotonic() + 10
    while not b_events.followed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a.stop.set()
    a_thread.join(5)
    record = a.elector.release()
    assert record is not None
    a.lock.update(record, acquired=False, timeout=2)
    assert b_events.led.wait(10) and b_events.generation == 1
    b.stop.set()
    b_thread.join(5)
