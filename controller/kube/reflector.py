"""A list+watch cache of one kind, the way client-go's reflector keeps an informer's store.

List (in pages) once, then watch from the list's resourceVersion; every event moves the cache and
the resourceVersion forward, bookmarks move the resourceVersion alone, so a watch the server ends
(its timeout) or that breaks (API server restart) resumes where it stopped without a relist. Only
a 410 Gone (etcd compacted the revision away) costs a relist; the relist reports what changed
meanwhile to `on_change` as events would have.

The cache holds what `transform` makes of each object, never the object itself: a pod as the API
serves it is ~5 KB of JSON, the fields the controller reads are a tenth of that. A transform
returning None leaves the object out.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from controller.errors import ControllerError, TemporaryError
from controller.kube.client import Gone, Kube, Object, Resource, watch_error
from controller.logs import kv

LOG = logging.getLogger("underlay.kube")
T = TypeVar("T")

OnChange = Callable[[str, Any, Any], None]
"""(key, old, new): old None for an addition, new None for a deletion."""


def object_key(obj: Object) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


class Reflector(Generic[T]):
    """One kind kept current in memory by a thread of its own."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        transform: Callable[[Object], T | None],
        on_change: OnChange | None = None,
        query: Mapping[str, Any] | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
    ) -> None:
        self.kube, self.resource, self.transform = kube, resource, transform
        self.on_change = on_change
        self.query = dict(query or {})
        self.page_size, self.watch_timeout = page_size, watch_timeout
        self.resource_version: str | None = None
        self.relists = 0  # how many times it listed (1 after start; more after 410 Gone)
        self.watches = 0  # how many watches it started (the server ends each after `watch_timeout`)
        self._items: dict[str, T] = {}
        self._changed = threading.Condition()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def items(self) -> dict[str, T]:
        with self._changed:
            return dict(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def wait_synced(self, timeout: float) -> bool:
        """True once the first list is in the cache."""
        return self._synced.wait(timeout)

    def wait_for(self, predicate: Callable[[Mapping[str, T]], bool], *, timeout: float) -> bool:
        """Wait until `predicate(cache)` holds (evaluated after every change, bookmark and new watch)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._items):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # -- running ---------------------------------------------------------------------------------

    def start(self, *, initial: tuple[str, list[Object]] | None = None) -> Reflector[T]:
        """Start listing and watching. `initial` (resourceVersion, objects) is a list the caller
        already made: the watch starts from it instead of listing again."""
        if initial is not None:
            self._replace(self._cut(initial[1]), initial[0])
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.resource.plural}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._follow()
                failures = 0
            except Gone:
                LOG.info(kv("watch expired, listing again", kind=self.resource.plural, rv=self.resource_version))
                self.resource_version = None
            except ControllerError as err:
                failures += 1
                delay = min(10.0, max(getattr(err, "delay", 1.0), 0.2 * 2 ** min(failures, 6)))
                level = logging.INFO if isinstance(err, TemporaryError) and failures < 3 else logging.WARNING
                LOG.log(level, kv("watch failed", kind=self.resource.plural, error=err, retry_in=f"{delay:.1f}s"))
                self._stop.wait(delay * random.uniform(0.8, 1.2))
            except Exception:  # a bug: keep the cache alive, say it loudly
                LOG.exception(kv("watch crashed", kind=self.resource.plural))
                self._stop.wait(5.0)

    def _list(self) -> None:
        """List page by page, each page cut down before the next is read: the whole list of a big
        cluster as JSON objects is hundreds of MB, and freed memory is not all given back."""
        fresh: dict[str, T] = {}
        version = ""
        for page in self.kube.list_pages(self.resource.path(), query=self.query, limit=self.page_size):
            fresh.update(self._cut(page.get("items", ())))
            version = page["metadata"].get("resourceVersion", version)
        self._replace(fresh, version)
        self.relists += 1

    def _cut(self, objects: Iterable[Object]) -> dict[str, T]:
        cut = {}
        for obj in objects:
            value = self.transform(obj)
            if value is not None:
                cut[object_key(obj)] = value
        return cut

    def _replace(self, fresh: dict[str, T], version: str) -> None:
        with self._changed:
            old, self._items = self._items, fresh
            self.resource_version = version
            self._changed.notify_all()
        self._synced.set()
        if self.on_change is not None:
            for key in old.keys() | fresh.keys():
                before, after = old.get(key), fresh.get(key)
                if before != after:
                    self.on_change(key, before, after)

    def _follow(self) -> None:
        assert self.resource_version is not None
        self._watch = self.kube.watch(self.resource.path(), resource_version=self.resource_version,
                                      timeout_seconds=self.watch_timeout, query=self.query)  # fmt: skip
        if self._stop.is_set():  # stop() ran before the watch existed to be closed
            self._watch.close()
        with self._changed:
            self.watches += 1
            self._changed.notify_all()
        try:
            for event in self._watch:
                self._apply(event)
        finally:
            self._watch = None

    def _apply(self, event: Object) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise watch_error(event, what=f"watch {self.resource.plural}")
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind == "BOOKMARK":
            with self._changed:
                self.resource_version = version or self.resource_version
                self._changed.notify_all()
            return
        key = object_key(obj)
        new = self.transform(obj) if kind != "DELETED" else None
        with self._changed:
            old = self._items.pop(key, None) if new is None else self._items.get(key)
            if new is not None:
                self._items[key] = new
            self.resource_version = version or self.resource_version
            self._changed.notify_all()
        if self.on_change is not None and old != new:
            self.on_change(key, old, new)
