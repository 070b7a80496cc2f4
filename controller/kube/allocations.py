"""IPAllocation objects: one per address, and what the controller's store records in them. Pure.

An address's object is named after the address itself (`198.18.0.5`, a valid object name; IPv6
`fd00:18::5` as `fd00-18--5`, see `name_for`; a dual-stack interface has one object per address, each
listing both in `interfaceAddresses`): the
API server then refuses a second object for one address whatever pool either controller thinks
it belongs to, which is the whole guarantee (a name from pool and address would let two pools that
overlap for a moment, or a pool edited under a running controller, hand one address out twice).
The pool is in the spec and in the `underlay.io/pool` label, for `kubectl get -l`.

Phases: `Bound` (a pod interface holds it), `Reserved` (a StatefulSet pod's address while the pod
is away: the sticky key keeps it), `Cooldown` (released; deleted once the pool's cooldown is over,
so stale ARP caches on the segment age out before anyone else gets it). The spec of a Reserved or
Cooldown object still names the last pod that held the address: `kubectl get ipallocation -o yaml`
tells who had it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from collections.abc import Mapping
from typing import Any

from controller.kube.client import IPALLOCATIONS, Object
from controller.store import Mode, Pod

POOL_LABEL = "underlay.io/pool"
NO_POOL = "(none)"
"""The pool of an address no pool holds (now): never an IPPool's name, and left out of the label."""


class Phase(enum.Enum):
    BOUND = "Bound"
    RESERVED = "Reserved"
    COOLDOWN = "Cooldown"


@dataclass(frozen=True)
class Slot:
    """What one address is, as the store keeps it: `pod` holds it (Bound) or held it last."""

    phase: Phase
    pool: str
    pod: Pod | None = None
    sticky: str | None = None
    released_at: float | None = None
    reason: str | None = None  # why it was released, when not by its pod's own DEL

    @property
    def holder(self) -> tuple[str, str] | None:
        """The interface holding the address, while Bound."""
        return self.pod.key if self.phase is Phase.BOUND and self.pod is not None else None


def name_for(ip: str) -> str:
    """The object's name: the IPv4 address as it is; an IPv6 address in compressed form with ':'
    as '-' (names take no ':'), and a leading or trailing '::' given its zero ("::5" -> "0--5"),
    since a name starts and ends with a letter or digit. One address, one name, and back."""
    if ":" not in ip:
        return ip
    text = str(ipaddress.IPv6Address(ip))
    text = ("0" if text.startswith(":") else "") + text + ("0" if text.endswith(":") else "")
    return text.replace(":", "-")


def address_of(name: str) -> str:
    """The address an object's name stands for (`name_for` undone)."""
    return name if "-" not in name else str(ipaddress.IPv6Address(name.replace("-", ":")))


def to_object(ip: str, slot: Slot, *, resource_version: str | None = None) -> Object:
    spec: dict[str, Any] = {"address": ip, "pool": slot.pool}
    status: dict[str, Any] = {"phase": slot.phase.value}
    pod = slot.pod
    if pod is not None:
        spec.update(
            pod={"namespace": pod.namespace, "name": pod.name, **({"uid": pod.uid} if pod.uid else {})}, node=pod.node, containerID=pod.container_id,
            interface=pod.ifname, mac=pod.mac, mode=pod.mode.value,
        )  # fmt: skip
        if pod.ip6 is not None:
            spec["interfaceAddresses"] = list(pod.ips)
        if pod.vlan is not None:
            spec["vlan"] = pod.vlan
        status["boundAt"] = timestamp(pod.created_at)
    if slot.sticky is not None:
        spec["stickyKey"] = slot.sticky
    if slot.released_at is not None:
        status["releasedAt"] = timestamp(slot.released_at)
    if slot.reason is not None:
        status["reason"] = slot.reason
    metadata: dict[str, Any] = {"name": name_for(ip), "labels": {} if slot.pool == NO_POOL else {POOL_LABEL: slot.pool}}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": IPALLOCATIONS.api_version, "kind": "IPAllocation", "metadata": metadata,
            "spec": spec, "status": status}  # fmt: skip


def from_object(obj: Object) -> tuple[str, Slot]:
    """(address, slot) of an IPAllocation. A missing phase reads as Bound: with a status
    subresource, the API server drops the status of a create, and creating is binding."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ip = str(spec.get("address") or address_of(obj["metadata"]["name"]))
    pool = str(spec.get("pool", ""))
    pod = None
    if spec.get("containerID"):
        owner = spec.get("pod") or {}
        both = [str(address) for address in spec.get("interfaceAddresses") or ()]
        pod = Pod(
            container_id=str(spec["containerID"]), ifname=str(spec.get("interface", "eth0")),
            node=str(spec.get("node", "")), namespace=str(owner.get("namespace", "")), name=str(owner.get("name", "")),
            pool=pool, ip=both[0] if len(both) == 2 else ip, mac=str(spec.get("mac", "")),
            mode=Mode(spec.get("mode", Mode.MACVLAN.value)), sticky=spec.get("stickyKey"),
            created_at=seconds(status.get("boundAt")) or seconds(obj["metadata"].get("creationTimestamp")) or 0.0,
            uid=owner.get("uid"), ip6=both[1] if len(both) == 2 else None, vlan=spec.get("vlan"),
        )  # fmt: skip
    phase = Phase(status.get("phase") or Phase.BOUND.value)
    return ip, Slot(phase, pool, pod, spec.get("stickyKey"), seconds(status.get("releasedAt")), status.get("reason"))


def same_spec(one: Object, other: Object) -> bool:
    """Whether two IPAllocations differ only in status (a write of the status subresource will do)."""
    return one.get("spec") == other.get("spec") and one["metadata"].get("labels") == other["metadata"].get("labels")


def same_meaning(status: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two statuses say the same about who may take the address; `boundAt` aside, which
    only tells when. A created object has no status yet (the API server drops the status of a
    create when the kind has a status subresource): that reads as Bound."""
    def meaning(found: Mapping[str, Any]) -> tuple[Any, ...]:
        return found.get("phase") or Phase.BOUND.value, found.get("releasedAt"), found.get("reason")

    return meaning(status) == meaning(other)


def timestamp(at: float) -> str:
    """RFC 3339 with microseconds, what `kubectl` shows and what round-trips a float second."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(text: Any) -> float | None:
    """The time an RFC 3339 timestamp of the API stands for (None when absent or malformed)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
