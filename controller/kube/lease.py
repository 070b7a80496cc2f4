"""The leader election's Lease on the API server (`coordination.k8s.io/v1`), through the one door
(controller/kube/client.py): read it, create it, replace it conditionally. The decisions are
controller/leader.py's; this module only turns a `LeaseRecord` into the object and back.

The times written (`acquireTime`, `renewTime`) are for people (`kubectl get lease -o yaml`) and
for other clients' tools: the candidates themselves judge expiry by their own clocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
import urllib3

from controller.kube.allocations import timestamp
from controller.kube.client import Kube, Missing, Object, Resource
from controller.leader import LeaseRecord

LEASES = Resource("coordination.k8s.io", "v1", "leases")


class KubeLease:
    """`controller.leader.LeaseLock` on the Lease `namespace/name`."""

    def __init__(self, kube: Kube, namespace: str, name: str, *, wall: Callable[[], float] = time.time) -> None:
        self.kube, self.namespace, self.name, self.wall = kube, namespace, name, wall
        self._object: Object | None = None  # as last read or written: a write keeps its other fields

    @property
    def path(self) -> str:
        return LEASES.path(namespace=self.namespace, name=self.name)

    def get(self) -> LeaseRecord | None:
        try:
            self._object = self.kube.get(self.path)
        except Missing:
            self._object = None
            return None
        return record_of(self._object)

    def create(self, record: LeaseRecord, *, timeout: float) -> LeaseRecord:
        body = {"apiVersion": LEASES.api_version, "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(record, acquired=True)}
        self._object = self.kube.request("POST", LEASES.path(namespace=self.namespace), body=body,
                                         timeout=_timeout(timeout))
        return record_of(self._object)

    def update(self, record: LeaseRecord, *, acquired: bool, timeout: float) -> LeaseRecord:
        """PUT with the record's resourceVersion: `Outdated` if anyone wrote since we read."""
        base = self._object or {"metadata": {"name": self.name, "namespace": self.namespace}}
        body = {**base, "apiVersion": LEASES.api_version, "kind": "Lease",
                "metadata": {**base["metadata"], "resourceVersion": record.version},
                "spec": {**base.get("spec", {}), **self._spec(record, acquired=acquired)}}
        self._object = self.kube.request("PUT", self.path, body=body, timeout=_timeout(timeout))
        return record_of(self._object)

    def _spec(self, record: LeaseRecord, *, acquired: bool) -> Object:
        now = timestamp(self.wall())  # a MicroTime
        spec: Object = {"holderIdentity": record.holder, "leaseDurationSeconds": round(record.duration),
                        "leaseTransitions": record.transitions, "renewTime": now}
        if acquired:
            spec["acquireTime"] = now
        return spec


def record_of(lease: Object) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(holder=spec.get("holderIdentity") or None, duration=float(spec.get("leaseDurationSeconds") or 0),
                       transitions=int(spec.get("leaseTransitions") or 0),
                       version=lease.get("metadata", {}).get("resourceVersion"))


def _timeout(seconds: float) -> urllib3.Timeout:
    """A lease call must not outlast the retry period: the leader's deadline is counted meanwhile."""
    return urllib3.Timeout(connect=seconds, read=seconds)
