"""The list+watch cache on the real API server: it follows changes, resumes a watch the server ended
from where it stopped (no relist), and lists again after 410 Gone, reporting what it missed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import IPALLOCATIONS, IPPOOLS, Kube
from controller.kube.reflector import Reflector

WAIT = 10.0


def pool(obj: dict[str, Any]) -> str:
    """What the caches of these tests keep of an IPAllocation."""
    return str(obj["spec"]["pool"])


def make(kube: Kube, ip: str) -> dict[str, Any]:
    body = {"apiVersion": "underlay.io/v1alpha1", "kind": "IPAllocation", "metadata": {"name": ip},
            "spec": {"address": ip, "pool": "a"}}  # fmt: skip
    return kube.create(IPALLOCATIONS.path(), body)


class Changes:
    """on_change calls, in order, waited for by tests."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, key: str, old: Any, new: Any) -> None:
        with self._cond:
            self.seen.append((key, old, new))
            self._cond.notify_all()

    def wait(self, count: int) -> list[tuple[str, Any, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= count, WAIT), self.seen
            return list(self.seen)


@pytest.fixture
def reflectors(kube_clean: Kube) -> Iterator[list[Reflector[Any]]]:
    started: list[Reflector[Any]] = []
    yield started
    for reflector in started:
        reflector.stop()


def test_it_follows_adds_updates_and_deletes(kube_clean: Kube, reflectors: list[Reflector[Any]]) -> None:
    make(kube_clean, "198.18.4.1")
    changes = Changes()
    cache = Reflector(kube_clean, IPALLOCATIONS, transform=pool, on_change=changes).start()
    reflectors.append(cache)
    assert cache.wait_synced(WAIT)
    assert cache.items() == {"198.18.4.1": "a"}
    made = make(kube_clean, "198.18.4.2")
    kube_clean.replace(IPALLOCATIONS.path(name="198.18.4.2"), dict(made, spec={"address": "198.18.4.2", "pool": "b"}))
    kube_clean.delete(IPALLOCATIONS.path(name="198.18.4.1"))
    assert changes.wait(4) == [("198.18.4.1", None, "a"), ("198.18.4.2", None, "a"),
                               ("198.18.4.2", "a", "b"), ("198.18.4.1", "a", None)]  # fmt: skip
    assert cache.items() == {"198.18.4.2": "b"}
    assert cache.relists == 1


def test_a_watch_the_server_ends_resumes_where_it_stopped(kube_clean: Kube, reflectors: list[Reflector[Any]]) -> None:
    cache = Reflector(kube_clean, IPALLOCATIONS, transform=pool, watch_timeout=1).start()
    reflectors.append(cache)
    assert cache.wait_synced(WAIT)
    for i in range(1, 4):  # each one on a new watch: the server ended the one before (1 s each)
        watches = cache.watches
        assert cache.wait_for(lambda _, seen=watches: cache.watches > seen, timeout=WAIT)
        make(kube_clean, f"198.18.4.{i}")
        assert cache.wait_for(lambda items, i=i: f"198.18.4.{i}" in items, timeout=WAIT)
    assert len(cache) == 3 and cache.watches >= 3
    assert cache.relists == 1  # resumed each time from its resourceVersion, never listed again


def test_after_410_gone_it_lists_again_and_reports_what_it_missed(kube_clean: Kube, reflectors: list[Reflector[Any]]) -> None:
    """A reflector that was away long enough that its resourceVersion is gone (etcd compacted it,
    or the API server restarted with a fresh watch cache): the server answers 410, it relists."""
    kept = make(kube_clean, "198.18.4.1")
    changes = Changes()
    stale = [kept, {"metadata": {"name": "198.18.4.9", "resourceVersion": "1"}, "spec": {"pool": "a"}}]
    cache = Reflector(kube_clean, IPALLOCATIONS, transform=pool, on_change=changes)
    reflectors.append(cache.start(initial=("1", stale)))  # resourceVersion 1: long compacted away
    changes.wait(2)  # the two objects it starts from
    assert changes.wait(3)[2] == ("198.18.4.9", "a", None)  # deleted while it was away
    assert cache.items() == {"198.18.4.1": "a"}
    assert cache.relists == 1
    make(kube_clean, "198.18.4.2")  # and it watches again from the new list
    assert changes.wait(4)[3] == ("198.18.4.2", None, "a")


def test_a_reflector_started_from_a_recent_list_replays_what_happened_since(
    kube_clean: Kube, reflectors: list[Reflector[Any]]
) -> None:
    first = make(kube_clean, "198.18.4.1")
    version = first["metadata"]["resourceVersion"]
    make(kube_clean, "198.18.4.2")  # after the list the reflector starts from
    cache = Reflector(kube_clean, IPALLOCATIONS, transform=pool)
    reflectors.append(cache.start(initial=(version, [first])))
    assert cache.wait_for(lambda items: "198.18.4.2" in items, timeout=WAIT)
    assert cache.relists == 0  # the watch replayed it: no list at all


def test_bookmarks_move_the_resource_version_without_events(kube_clean: Kube, reflectors: list[Reflector[Any]]) -> None:
    """Other kinds' writes move etcd's revision; a bookmark (the API server sends one before it ends
    a watch) carries it to this reflector, so a resumed watch starts from a recent revision."""
    cache = Reflector(kube_clean, IPALLOCATIONS, transform=pool, watch_timeout=3).start()
    reflectors.append(cache)
    assert cache.wait_synced(WAIT)
    listed = int(cache.resource_version or 0)
    other = kube_clean.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool",
                                               "metadata": {"name": "elsewhere"}, "spec": {"subnet": "198.18.4.0/24"}})  # fmt: skip
    later = int(other["metadata"]["resourceVersion"])
    assert later > listed
    assert cache.wait_for(lambda _: int(cache.resource_version or 0) >= later, timeout=WAIT)
    assert len(cache) == 0 and cache.relists == 1
