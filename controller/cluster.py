"""The service's side of the cluster: a pod request's intent, and telling a pod why it got nothing.

`resolve` reads what intent needs through a `ClusterView` (the pod, its namespace and node, its
StatefulSet) and leaves every decision to the pure modules (controller/intent.py, sticky.py,
selectors.py). It runs before the service takes its lock: a cache miss may read the API server.

`tell` records a Kubernetes Event on the pod for the errors that say why it has no address; it is
best effort, since the CNI error carries the same message to the runtime anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import intent
from controller.errors import ConflictError, Contradiction, ControllerError
from controller.logs import kv
from controller.selectors import Subject, labels_of
from controller.sticky import StatefulSetPod, identity

LOG = logging.getLogger("underlay.cluster")
Json = Mapping[str, Any]


@dataclass(frozen=True)
class Ask:
    """A pod interface's CNI request, as far as intent is concerned."""

    namespace: str
    name: str
    uid: str | None
    node: str
    request: intent.Request
    sticky: str | None = None  # a key the caller named itself (the lab's REST API allows it)

    @property
    def who(self) -> str:
        return f"pod {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Resolved:
    pools: tuple[str, ...]  # to try in order
    ip: str | None
    mac: str | None
    member: StatefulSetPod | None
    involved: Json  # the pod, as Events name it

    @property
    def sticky(self) -> str | None:
        return None if self.member is None else self.member.key


def involved(ask: Ask, pod: Json | None = None) -> Json:
    """What an Event about the pod names: the pod itself when known, else its reference."""
    if pod is not None:
        return pod
    metadata = {"namespace": ask.namespace, "name": ask.name, **({"uid": ask.uid} if ask.uid else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def resolve(cluster: intent.ClusterView, ask: Ask, *, pools: Iterable[intent.PoolView]) -> Resolved:
    """The pools, address and MAC this interface gets, and its StatefulSet identity. Raises the
    errors of intent (InvalidIntent, Contradiction, NoPoolMatches) and TemporaryError."""
    pod = _pod(cluster, ask)
    member = identity(pod) if pod is not None else None
    if ask.sticky is not None and member is not None and ask.sticky != member.key:
        raise Contradiction(
            f"{ask.who}: the request's sticky key {ask.sticky} is not its StatefulSet identity {member.key}"
        )
    workload = None if member is None else _workload(cluster, member)
    namespace = cluster.namespace(ask.namespace)
    wanted = intent.read(ask.request, pod=pod, namespace=namespace, workload=workload, member=member, who=ask.who)
    subject = Subject(ask.namespace, ask.node, pod_labels=labels_of(pod), namespace_labels=labels_of(namespace),
                      node_labels=labels_of(cluster.node(ask.node)))
    chosen = intent.choose_pools(wanted, subject=subject, pools=pools, who=ask.who)
    return Resolved(chosen, None if wanted.ip is None else wanted.ip.value,
                    None if wanted.mac is None else wanted.mac.value, member, involved(ask, pod))


def _workload(cluster: intent.ClusterView, member: StatefulSetPod) -> Json | None:
    """The pod's StatefulSet; another incarnation of its name (a lagging cache) has nothing to say."""
    found = cluster.statefulset(member.namespace, member.statefulset)
    return found if found is not None and (found.get("metadata") or {}).get("uid") == member.uid else None


def _pod(cluster: intent.ClusterView, ask: Ask) -> Json | None:
    """The pod the request is for. Without a UID (a runtime outside Kubernetes, a benchmark) a
    missing pod has no annotations; with one, the pod must be that UID: the cache may be behind a
    re-creation, so a different UID is read again from the API server before refusing."""
    pod = cluster.pod(ask.namespace, ask.name)
    if ask.uid is None or (pod is not None and _uid(pod) == ask.uid):
        return pod
    pod = cluster.pod_live(ask.namespace, ask.name)
    if pod is None or _uid(pod) != ask.uid:
        now = "no such pod" if pod is None else f"the pod there is uid {_uid(pod)}"
        raise ConflictError(f"{ask.who}: uid {ask.uid} is not in the Kubernetes API ({now}): it was deleted")
    return pod


def _uid(pod: Json) -> object:
    return (pod.get("metadata") or {}).get("uid")


def tell(cluster: intent.ClusterView, about: Json, error: ControllerError) -> None:
    """An Event on the pod for an error that says why it has no address (best effort)."""
    if error.event is None:
        return
    try:
        cluster.event(about, reason=error.event, message=str(error), type="Warning")
    except Exception as err:  # an Event is a courtesy: the CNI error says the same
        LOG.warning(kv("event not recorded", reason=error.event, error=err))
