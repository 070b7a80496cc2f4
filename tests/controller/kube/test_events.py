"""Kubernetes Events on the real API server: one object per repeated event (its count goes up), and
recording never fails the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import EVENTS, PODS, Kube
from controller.kube.events import COMPONENT, EventRecorder
from controller.kube.view import trim_pod
from ctlfakes import Clock


@pytest.fixture
def recorder(kube: Kube, clock: Clock) -> Iterator[EventRecorder]:
    started = EventRecorder(kube, now=clock).start()
    yield started
    started.stop()


def events(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """Ours (the scheduler has its say about these pods too)."""
    found = kube.get(EVENTS.path(namespace=namespace))["items"]
    return sorted((e for e in found if e.get("reportingComponent") == COMPONENT), key=lambda e: e["message"])


def a_pod(kube: Kube, namespace: str) -> dict[str, Any]:
    body = {"metadata": {"name": "web-0"}, "spec": {"containers": [{"name": "c", "image": "none"}]}}
    return trim_pod(kube.create(PODS.path(namespace=namespace), body))


def test_a_repeated_event_is_one_object_with_a_count(kube: Kube, k8s_namespace: str, recorder: EventRecorder, clock: Clock) -> None:
    pod = a_pod(kube, k8s_namespace)
    for _ in range(3):
        recorder.record(pod, reason="PoolExhausted", message="pool web: exhausted")
        clock.advance(60)
    recorder.record(pod, reason="AddressInUse", message="198.18.0.5 is held by default/db-1", type="Warning")
    recorder.wait_idle()
    exhausted, held = events(kube, k8s_namespace)[::-1]
    assert exhausted["count"] == 3 and held["count"] == 1
    assert (exhausted["firstTimestamp"], exhausted["lastTimestamp"]) == ("1970-01-01T00:16:40Z", "1970-01-01T00:18:40Z")
    assert exhausted["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": k8s_namespace,
                                           "name": "web-0", "uid": pod["metadata"]["uid"]}  # fmt: skip
    assert (held["reason"], held["type"], held["source"]) == ("AddressInUse", "Warning", {"component": COMPONENT})


def test_recording_never_fails_the_caller(kube: Kube, k8s_namespace: str, recorder: EventRecorder) -> None:
    gone = {"metadata": {"name": "web-0", "namespace": "no-such-namespace"}}
    recorder.record(gone, reason="PoolExhausted", message="refused by the API server")  # its namespace does not exist
    recorder.record({"no": "metadata"}, reason="Bad", message="not an object")
    pod = a_pod(kube, k8s_namespace)
    recorder.record(pod, reason="PoolExhausted", message="pool web: exhausted")
    recorder.wait_idle()
    assert [e["message"] for e in events(kube, k8s_namespace)] == ["pool web: exhausted"]


def test_an_expired_event_is_recorded_anew(kube: Kube, k8s_namespace: str, recorder: EventRecorder) -> None:
    pod = a_pod(kube, k8s_namespace)
    recorder.record(pod, reason="PoolExhausted", message="pool web: exhausted")
    recorder.wait_idle()
    (first,) = events(kube, k8s_namespace)
    kube.delete(EVENTS.path(namespace=k8s_namespace, name=first["metadata"]["name"]))  # events live an hour
    recorder.record(pod, reason="PoolExhausted", message="pool web: exhausted")
    recorder.wait_idle()
    (second,) = events(kube, k8s_namespace)
    assert second["count"] == 1  # created again, not counted on the one that is gone
