"""Test doubles and builders for the controller tests: a config, a hand-turned clock, a fabric, a
cluster view.

`RecordingFabric` stands in for the OpenFlow app at our own protocol boundary (`service.Fabric`):
it records which switches were asked to converge, and can be told to fail like a switch that is
down. Everything else in these tests is real: the SQLite store writes a file in tmp_path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller import config as config_module
from controller.config import Config
from controller.errors import SwitchUnavailable, TemporaryError
from controller.service import PodRequest
from controller.store import Mode, Pod, SqliteStore

TOKENS = {"n1": "token-one", "n2": "token-two", "n3": "token-three"}
STORE_KINDS = ("sqlite", "kubernetes")  # what `store_kind` is parametrised over where both apply


def make_config(**overrides: Any) -> Config:
    data: dict[str, Any] = {
        "store": "unused",
        "release_cooldown": 30,
        "resync_grace": 60,
        "nodes": {
            "n1": {"token": TOKENS["n1"]},  # port learned from its frames
            "n2": {"token": TOKENS["n2"], "dpid": 1, "port": 3},  # pinned
            "n3": {"token": TOKENS["n3"]},
        },
        "switches": {"1": {"trusted_ports": [1]}, "2": {"trusted_ports": [1, 2]}},
        "pools": {
            "default": {
                "subnet": "198.18.0.0/24",
                "ranges": ["198.18.0.100-198.18.0.199"],
                "gateway": "198.18.0.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}],
                "default": True,
            },
            "small": {"subnet": "198.19.0.0/29", "gateway": "198.19.0.1"},
        },
    }
    data.update(overrides)
    return config_module.parse(data)


def pod_request(cid: str, **fields: object) -> PodRequest:
    """A macvlan pod's request for container `cid` (pod default/pod-<cid>), with `fields` changed."""
    values: dict[str, object] = dict(container_id=cid, ifname="eth0", namespace="default", name=f"pod-{cid}",
                                     mode=Mode.MACVLAN)
    values.update(fields)
    return PodRequest(**values)  # type: ignore[arg-type]


def store_pod(cid: str, ip: str, **fields: object) -> Pod:
    """A store record of one pod interface, for the store tests; `fields` override the defaults."""
    values: dict[str, object] = dict(
        container_id=cid, ifname="eth0", node="n1", namespace="default", name=f"pod-{cid}", pool="default",
        ip=ip, mac="02:55:c6:12:00:05", mode=Mode.MACVLAN, sticky=None, created_at=12.5,
    )  # fmt: skip
    values.update(fields)
    return Pod(**values)  # type: ignore[arg-type]


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


class RecordingFabric:
    """Records every apply(dpids); fails while `down` holds a dpid, or for the next `fail` calls.
    `sightings` is what its switches have seen on trusted ports: {(dpid, mac or ip): ports}."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.sightings: dict[tuple[int, str], tuple[int, ...]] = {}
        self.seen_calls: list[tuple[tuple[int, ...], str]] = []
        self.down: set[int] = set()
        self.fail = 0
        self.on_apply: Callable[[tuple[int, ...]], None] | None = None
        self._lock = threading.Lock()

    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        dpids = tuple(dpids)
        with self._lock:
            self.calls.append(dpids)
            failing = self.fail > 0 or bool(self.down & set(dpids))
            self.fail = max(0, self.fail - 1)
        if self.on_apply is not None:
            self.on_apply(dpids)
        if failing:
            raise SwitchUnavailable(f"switch {dpids} did not answer")

    def seen(self, dpids: Iterable[int], *, cookie: int, mac: str | None = None, ip: str | None = None
             ) -> dict[int, tuple[int, ...]]:
        dpids, what = tuple(dpids), mac or ip or ""
        with self._lock:
            self.seen_calls.append((dpids, what))
            down = self.down & set(dpids)
        if down:
            raise SwitchUnavailable(f"switch {min(down)} is not connected")
        return {dpid: self.sightings.get((dpid, what), ()) for dpid in dpids}


def break_commits(store: SqliteStore) -> None:
    """Make the store's next COMMIT fail, as a full disk would: a trigger breaks a deferred foreign
    key on every pod written, and SQLite checks deferred keys at commit."""
    store._db.executescript("""
        PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER breaks_commit AFTER INSERT ON pods BEGIN INSERT INTO child VALUES (42); END;
    """)


class DictCluster:
    """A `ClusterView` over plain dicts, at our own protocol boundary (the real one, over watch
    caches of a real API server, is in kube/test_view.py and test_intent_apiserver.py). `cache`
    overrides what the cached reads see, to play a cache that lags; `down` makes every read fail
    like an API outage."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.statefulsets: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []  # (namespace/name, type, reason, message)
        self.down = False
        self.live_reads = 0

    def _up(self) -> None:
        if self.down:
            raise TemporaryError("the Kubernetes API is not reachable: connection refused")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._up()
        key = (namespace, name)
        return self.cache[key] if key in self.cache else self.pods.get(key)

    def pod_live(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._up()
        self.live_reads += 1
        return self.pods.get((namespace, name))

    def namespace(self, name: str) -> dict[str, Any] | None:
        self._up()
        return self.namespaces.get(name)

    def statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._up()
        return self.statefulsets.get((namespace, name))

    def node(self, name: str) -> dict[str, Any] | None:
        self._up()
        return self.nodes.get(name)

    def event(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        self._up()
        metadata = involved["metadata"]
        self.events.append((f"{metadata['namespace']}/{metadata['name']}", type, reason, message))

    # builders ------------------------------------------------------------------------------------

    def add_pod(self, name: str, *, namespace: str = "default", uid: str | None = None,
                annotations: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"namespace": namespace, "name": name, "uid": uid or f"uid-{name}",
                                    "annotations": dict(annotations or {}), "labels": dict(labels or {})}
        if owner is not None:
            metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner["kind"], "name": owner["name"],
                                            "uid": owner["uid"], "controller": True}]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
        self.pods[(namespace, name)] = pod
        return pod

    def add_statefulset(self, name: str, *, replicas: int, uid: str, namespace: str = "default",
                        annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        sts = {"metadata": {"namespace": namespace, "name": name, "uid": uid, "annotations": dict(annotations or {})},
               "spec": {"replicas": replicas}}
        self.statefulsets[(namespace, name)] = sts
        return sts
