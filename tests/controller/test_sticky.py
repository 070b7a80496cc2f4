"""StatefulSet identity and when a StatefulSet pod's reservation ends (no root needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.sticky import StatefulSetPod, identity, ordinals, parse_key, why_stale

STS_UID = "5f0c7a4e-0000-4000-8000-000000000001"


def sts_pod(name: str = "db-2", *, owner: str = "db", uid: str = STS_UID, pod_uid: str = "pod-uid-1",
            kind: str = "StatefulSet", controller: bool = True, index: str | None = None) -> dict[str, Any]:
    labels = {} if index is None else {"apps.kubernetes.io/pod-index": index}
    return {"metadata": {"namespace": "default", "name": name, "uid": pod_uid, "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": uid,
                                              "controller": controller}]}}


def statefulset(*, uid: str = STS_UID, replicas: int | None = 3, start: int | None = None,
                deleting: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    if start is not None:
        spec["ordinals"] = {"start": start}
    metadata: dict[str, Any] = {"namespace": "default", "name": "db", "uid": uid}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": metadata, "spec": spec}


def test_identity_is_the_statefulset_s_never_the_pod_s() -> None:
    first, replacement = identity(sts_pod(pod_uid="a")), identity(sts_pod(pod_uid="b"))
    assert first == replacement == StatefulSetPod("default", "db", 2, STS_UID)
    assert first is not None and first.key == f"default/db-2@{STS_UID}"


@pytest.mark.parametrize(
    "pod",
    [
        sts_pod(kind="ReplicaSet"),
        sts_pod(controller=False),
        sts_pod(name="web-2"),  # not named after its StatefulSet
        sts_pod(name="db-x"),
        sts_pod(index="3"),  # the label contradicts the name
        {"metadata": {"namespace": "default", "name": "db-2"}},
    ],
)
def test_not_a_statefulset_pod(pod: dict[str, Any]) -> None:
    assert identity(pod) is None


def test_the_pod_index_label_agreeing_with_the_name_is_fine() -> None:
    assert identity(sts_pod(index="2")) == StatefulSetPod("default", "db", 2, STS_UID)


names = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(names, names, st.integers(0, 10_000), st.uuids().map(str))
def test_keys_round_trip(namespace: str, name: str, ordinal: int, uid: str) -> None:
    member = StatefulSetPod(namespace, name, ordinal, uid)
    assert parse_key(member.key) == member


@pytest.mark.parametrize("key", ["default/web-0", "default/db-x@u", "db-1@u", "a/b/c-1@u"])
def test_keys_that_are_not_a_statefulset_s(key: str) -> None:
    assert parse_key(key) is None


def test_supersedes_only_the_same_ordinal_of_another_uid() -> None:
    member = StatefulSetPod("default", "db", 2, "new")
    assert member.supersedes(StatefulSetPod("default", "db", 2, "old"))
    assert not member.supersedes(member)
    assert not member.supersedes(StatefulSetPod("default", "db", 1, "old"))
    assert not member.supersedes(StatefulSetPod("other", "db", 2, "old"))


MEMBER = StatefulSetPod("default", "db", 2, STS_UID)


@pytest.mark.parametrize(
    ("sts", "reason"),
    [
        (statefulset(), None),
        (statefulset(replicas=None, start=2), None),  # replicas default to 1: ordinal 2 only
        (statefulset(start=1), None),  # ordinals 1-3
        (None, "StatefulSet default/db is gone"),
        (statefulset(uid="other"), f"StatefulSet default/db was re-created (uid other, the reservation is for uid {STS_UID})"),
        (statefulset(deleting=True), "StatefulSet default/db is being deleted"),
        (statefulset(replicas=2), "StatefulSet default/db keeps ordinals 0-1 (replicas: 2): ordinal 2 is gone"),
        (statefulset(replicas=0), "StatefulSet default/db keeps ordinals none (replicas: 0): ordinal 2 is gone"),
        (statefulset(replicas=1, start=3), "StatefulSet default/db keeps ordinals 3 (replicas: 1): ordinal 2 is gone"),
    ],
)
def test_why_stale(sts: dict[str, Any] | None, reason: str | None) -> None:
    assert why_stale(MEMBER, sts) == reason


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 120))
def test_a_reservation_holds_exactly_for_the_ordinals_the_statefulset_keeps(start: int, replicas: int, ordinal: int) -> None:
    sts = statefulset(replicas=replicas, start=start)
    assert ordinals(sts) == (start, replicas)
    kept = why_stale(StatefulSetPod("default", "db", ordinal, STS_UID), sts) is None
    assert kept == (ordinal in range(start, start + replicas))
