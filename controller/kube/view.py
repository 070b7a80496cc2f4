"""What the controller reads of the cluster (controller/intent.py's `ClusterView`), from watch caches.

Pods, namespaces, StatefulSets and nodes are each kept by a `Reflector`, as the API's JSON cut down
to the fields intent reads (`trim_*` below). A read misses the cache only for an object the watch
has not delivered yet (a pod created a moment ago): then one live GET answers, and the watch fills
the cache on its own. The cut matters: a pod as served is ~5 KB of JSON, most of it spec and status
nobody here reads, and `kubectl apply` adds the whole manifest again as an annotation; cut, a pod
is ~1 KB of Python objects, and 10,000 of them fit the controller's 150 MB. Strings that repeat
across objects (keys, label values, namespaces, node names) are interned, so each is stored once.

Events go through `EventRecorder` (events.py): recording one never blocks or fails the caller.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from controller.kube.client import NAMESPACES, NODES, PODS, STATEFULSETS, Kube, Missing, Object, Resource
from controller.kube.events import EventRecorder
from controller.kube.reflector import Reflector

LOG = logging.getLogger("underlay.kube")

ANNOTATION_PREFIXES = ("underlay.io/", "ipam.spidernet.io/", "cni.projectcalico.org/", "ovn.kubernetes.io/")
"""The annotations intent reads (controller/intent.py: ours and the aliases users migrate from);
the others are dropped from the caches."""

_intern = sys.intern


def _map(data: Any, *, keep: Callable[[str], bool] | None = None) -> dict[str, str]:
    if not isinstance(data, Mapping):
        return {}
    return {_intern(k): _intern(v) if len(v) < 64 else v for k, v in data.items()
            if isinstance(v, str) and (keep is None or keep(k))}  # fmt: skip


def _ours(key: str) -> bool:
    return key.startswith(ANNOTATION_PREFIXES)


def _meta(meta: Mapping[str, Any], *, labels: bool = True, annotations: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"name": _intern(meta["name"]), "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        out["namespace"] = _intern(meta["namespace"])
    if labels:
        out["labels"] = _map(meta.get("labels"))
    if annotations:
        out["annotations"] = _map(meta.get("annotations"), keep=_ours)
    if meta.get("deletionTimestamp"):
        out["deletionTimestamp"] = meta["deletionTimestamp"]
    return out


def trim_pod(obj: Object) -> Object:
    meta = obj["metadata"]
    out = _meta(meta)
    owners = [{_intern(k): _intern(v) if isinstance(v, str) else v for k, v in ref.items()
               if k in ("apiVersion", "kind", "name", "uid", "controller")} for ref in meta.get("ownerReferences") or ()]  # fmt: skip
    if owners:
        out["ownerReferences"] = owners
    node = (obj.get("spec") or {}).get("nodeName")
    phase = (obj.get("status") or {}).get("phase")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out,
            "spec": {"nodeName": _intern(node)} if node else {}, "status": {"phase": _intern(phase)} if phase else {}}  # fmt: skip


def trim_namespace(obj: Object) -> Object:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(obj["metadata"])}


def trim_node(obj: Object) -> Object:
    """Its labels (pool selectors) and its Ready condition (controller/nodelife.py)."""
    ready = [{key: condition.get(key) for key in ("type", "status", "lastTransitionTime")}
             for condition in (obj.get("status") or {}).get("conditions") or () if condition.get("type") == "Ready"]
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(obj["metadata"], annotations=False),
            "status": {"conditions": ready}}


def trim_statefulset(obj: Object) -> Object:
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    kept: dict[str, Any] = {"template": {"metadata": {"annotations": _map(template.get("annotations"), keep=_ours)}}}
    for field in ("replicas", "ordinals"):
        if field in spec:
            kept[field] = spec[field]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(obj["metadata"], labels=False), "spec": kept}


class KubeView:
    """`ClusterView` over watch caches of pods, namespaces, StatefulSets and nodes."""

    def __init__(self, kube: Kube, *, events: EventRecorder | None = None) -> None:
        self.kube = kube
        self.events = events or EventRecorder(kube)
        self.pods = Reflector(kube, PODS, transform=trim_pod)
        self.namespaces = Reflector(kube, NAMESPACES, transform=trim_namespace)
        self.statefulsets = Reflector(kube, STATEFULSETS, transform=trim_statefulset)
        self.nodes = Reflector(kube, NODES, transform=trim_node)
        self._caches = (self.pods, self.namespaces, self.statefulsets, self.nodes)

    def start(self) -> KubeView:
        for cache in self._caches:
            cache.start()
        self.events.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return all(cache.wait_synced(timeout) for cache in self._caches)

    def stop(self) -> None:
        for cache in self._caches:
            cache.stop()
        self.events.stop()

    # -- ClusterView -----------------------------------------------------------------------------

    def pod(self, namespace: str, name: str) -> Object | None:
        return self._cached(self.pods, PODS, trim_pod, name, namespace=namespace)

    def pod_live(self, namespace: str, name: str) -> Object | None:
        """The API server's answer, never the cache's (raises TemporaryError when it cannot answer)."""
        return self._live(PODS, trim_pod, name, namespace=namespace)

    def namespace(self, name: str) -> Object | None:
        return self._cached(self.namespaces, NAMESPACES, trim_namespace, name)

    def statefulset(self, namespace: str, name: str) -> Object | None:
        return self._cached(self.statefulsets, STATEFULSETS, trim_statefulset, name, namespace=namespace)

    def node(self, name: str) -> Object | None:
        return self._cached(self.nodes, NODES, trim_node, name)

    def node_live(self, name: str) -> Object | None:
        """The API server's answer, never the cache's (controller/nodelife.py confirms with it)."""
        return self._live(NODES, trim_node, name)

    def event(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        self.events.record(involved, reason=reason, message=message, type=type)

    def _cached(
        self, cache: Reflector[Object], resource: Resource, trim: Callable[[Object], Object], name: str,
        *, namespace: str | None = None,
    ) -> Object | None:  # fmt: skip
        found = cache.get(name if namespace is None else f"{namespace}/{name}")
        return found if found is not None else self._live(resource, trim, name, namespace=namespace)

    def _live(
        self, resource: Resource, trim: Callable[[Object], Object], name: str, *, namespace: str | None = None
    ) -> Object | None:
        try:
            return trim(self.kube.get(resource.path(namespace=namespace, name=name)))
        except Missing:
            return None
