"""Kubernetes Events (core/v1) about the objects users look at, recorded like kubelet's recorder.

The same event again (same object, type, reason and message) is not a new object: the first one's
`count` goes up and its `lastTimestamp` moves (client-go's EventCorrelator does this, so a pod that
fails the same way every few seconds for an hour shows `x120 over 1h`, not 120 lines). Recording
never blocks or fails the caller: events queue for a thread of their own, a full queue drops the
newest, and an API error is logged, because an Event only repeats what the CNI error already says.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.errors import ControllerError
from controller.kube.client import EVENTS, Kube, Missing
from controller.logs import kv

LOG = logging.getLogger("underlay.kube")
COMPONENT = "underlay-controller"
_STOP = object()


class EventRecorder:
    def __init__(
        self, kube: Kube, *, now: Callable[[], float] = time.time, remembered: int = 4096, backlog: int = 1000
    ) -> None:
        self.kube, self.now = kube, now
        self.instance = socket.gethostname()
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, str, int]] = OrderedDict()  # key -> (ns, name, count)
        self._remembered = remembered
        self._queue: queue.Queue[Any] = queue.Queue(backlog)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> EventRecorder:
        self._thread = threading.Thread(target=self._run, name="kube-events", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)

    def wait_idle(self) -> None:
        """Until every event recorded so far is written (or failed): for tests and shutdown."""
        self._queue.join()

    def record(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        """Queue an Event about `involved` (an object's JSON, at least its metadata; a Pod if it
        does not say its kind). Never raises."""
        try:
            self._queue.put_nowait((dict(involved), reason, message, type, self.now()))
        except queue.Full:
            self.dropped += 1
        except Exception as err:  # noqa: BLE001 - the caller is never failed by an Event
            LOG.warning(kv("event not queued", reason=reason, error=err))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(*item)
            except (ControllerError, KeyError, TypeError) as err:
                LOG.warning(kv("event not recorded", reason=item[1], error=err))
            except Exception:
                LOG.exception(kv("event not recorded", reason=item[1]))
            finally:
                self._queue.task_done()

    def _write(self, involved: dict[str, Any], reason: str, message: str, type: str, at: float) -> None:
        reference = _reference(involved)
        key = (tuple(sorted(reference.items())), type, reason, message)
        stamp = _timestamp(at)
        seen = self._seen.get(key)
        if seen is not None:
            namespace, name, count = seen
            try:
                self.kube.patch(EVENTS.path(namespace=namespace, name=name),
                                {"count": count + 1, "lastTimestamp": stamp})  # fmt: skip
                self._remember(key, (namespace, name, count + 1))
                return
            except Missing:  # expired (events live an hour): a new one
                pass
        namespace = reference.get("namespace") or "default"
        event = {
            "metadata": {"name": f"{reference['name']}.{int(at * 1e9):x}", "namespace": namespace},
            "involvedObject": reference, "reason": reason, "message": message, "type": type, "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance,
        }  # fmt: skip
        created = self.kube.create(EVENTS.path(namespace=namespace), event)
        self._remember(key, (namespace, created["metadata"]["name"], 1))

    def _remember(self, key: tuple[Any, ...], value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)


def _reference(involved: Mapping[str, Any]) -> dict[str, str]:
    meta = involved.get("metadata") or {}
    reference = {"kind": involved.get("kind", "Pod"), "apiVersion": involved.get("apiVersion", "v1"),
                 "name": meta["name"]}  # fmt: skip
    for field in ("namespace", "uid"):
        if meta.get(field):
            reference[field] = meta[field]
    return reference


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
