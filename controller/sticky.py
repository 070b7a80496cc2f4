"""StatefulSet pods keep their address: who a StatefulSet pod is, and when its address is let go.

Pure: the pod's and the StatefulSet's JSON in, decisions out.

A StatefulSet pod's identity is (namespace, StatefulSet name, ordinal) plus the StatefulSet's UID,
taken from the pod's controller ownerReference. Never the pod's own UID: every replacement pod has a
new one, and deciding stickiness by it hands a StatefulSet's address to the next pod that asks while
the old pod is still being replaced (the duplicate-address bug Spiderpool shipped: #2442, #2526).
The UID does belong in the identity, because a StatefulSet deleted and created again under the same
name is a new workload: its pods must not inherit the old one's reservations.

The identity is written as the IPAM's sticky key, `<namespace>/<statefulset>-<ordinal>@<uid>`, so
it survives in any store as a plain string and reads well in messages.

A reservation holds while its StatefulSet exists with that UID, is not being deleted, and keeps the
ordinal (`spec.ordinals.start` <= ordinal < start + `spec.replicas`). Scale-down past the ordinal,
deletion and re-creation end it; the address then cools down like any released one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # set by the StatefulSet controller since 1.28
_KEY = re.compile(r"^(?P<namespace>[^/@]+)/(?P<name>[^/@]+)-(?P<ordinal>\d+)@(?P<uid>[^/@]+)$")


@dataclass(frozen=True)
class StatefulSetPod:
    namespace: str
    statefulset: str
    ordinal: int
    uid: str  # the StatefulSet's

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.statefulset}-{self.ordinal}@{self.uid}"

    @property
    def owner(self) -> str:
        """How messages name the StatefulSet."""
        return f"StatefulSet {self.namespace}/{self.statefulset}"

    def supersedes(self, other: StatefulSetPod) -> bool:
        """Same namespace, name and ordinal under another UID: `other` belongs to a StatefulSet that
        was deleted (names are unique, so the one this pod's owner reference names replaced it)."""
        return (self.namespace, self.statefulset, self.ordinal) == (other.namespace, other.statefulset, other.ordinal) \
            and self.uid != other.uid


def identity(pod: Mapping[str, Any]) -> StatefulSetPod | None:
    """The StatefulSet identity of a pod, or None when no StatefulSet controls it."""
    metadata = pod.get("metadata") or {}
    owner = _controller(metadata.get("ownerReferences") or [])
    if owner is None or not owner.get("name") or not owner.get("uid"):
        return None
    name, namespace = str(metadata.get("name", "")), str(metadata.get("namespace", ""))
    ordinal = _ordinal(name, str(owner["name"]), (metadata.get("labels") or {}).get(POD_INDEX_LABEL))
    if ordinal is None:
        return None
    return StatefulSetPod(namespace, str(owner["name"]), ordinal, str(owner["uid"]))


def _controller(owners: list[Any]) -> Mapping[str, Any] | None:
    for owner in owners:
        if isinstance(owner, Mapping) and owner.get("controller") is True:
            is_sts = owner.get("kind") == "StatefulSet" and str(owner.get("apiVersion", "")).startswith("apps/")
            return owner if is_sts else None
    return None


def _ordinal(pod_name: str, statefulset: str, label: object) -> int | None:
    """The label when there is one, else the `-<n>` suffix StatefulSet pod names always carry."""
    suffix = pod_name[len(statefulset) + 1:] if pod_name.startswith(statefulset + "-") else ""
    if not suffix.isdigit():
        return None
    if isinstance(label, str) and label.isdigit() and int(label) != int(suffix):
        return None  # a pod that contradicts itself is not one the StatefulSet controller made
    return int(suffix)


def parse_key(key: str) -> StatefulSetPod | None:
    """The identity a sticky key stands for; None for keys that are not a StatefulSet's (the lab's
    REST API lets a caller name its own sticky keys)."""
    found = _KEY.match(key)
    if found is None:
        return None
    return StatefulSetPod(found["namespace"], found["name"], int(found["ordinal"]), found["uid"])


def why_stale(member: StatefulSetPod, statefulset: Mapping[str, Any] | None) -> str | None:
    """Why `member`'s reservation must go, given its StatefulSet as the API has it now (None: not
    found); None while the reservation holds."""
    if statefulset is None:
        return f"{member.owner} is gone"
    metadata = statefulset.get("metadata") or {}
    if metadata.get("uid") != member.uid:
        return f"{member.owner} was re-created (uid {metadata.get('uid')}, the reservation is for uid {member.uid})"
    if metadata.get("deletionTimestamp"):
        return f"{member.owner} is being deleted"
    first, count = ordinals(statefulset)
    if not first <= member.ordinal < first + count:
        return f"{member.owner} keeps ordinals {_span(first, count)} (replicas: {count}): ordinal {member.ordinal} is gone"
    return None


def ordinals(statefulset: Mapping[str, Any]) -> tuple[int, int]:
    """(first ordinal, replicas) of a StatefulSet's spec, with the API's defaults (0, 1)."""
    spec = statefulset.get("spec") or {}
    replicas = spec.get("replicas")
    start = (spec.get("ordinals") or {}).get("start")
    return (start if isinstance(start, int) else 0), (replicas if isinstance(replicas, int) else 1)


def _span(first: int, count: int) -> str:
    return "none" if count <= 0 else str(first) if count == 1 else f"{first}-{first + count - 1}"
