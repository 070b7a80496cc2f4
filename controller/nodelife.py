"""Node lifecycle from Node objects (`store = "kubernetes"`): a node the cluster has lost loses its
pods' addresses and its flows.

A node's agent cannot say it died. The cluster can: its Node object is deleted (the node was
removed), or its Ready condition has been False or Unknown for longer than `node_grace` (kubelet
stopped reporting: the node controller sets Unknown after 40 s). Then every pod placed on the node
is released, with the reason recorded, as the leak collector releases an abandoned address
(controller/leaks.py): a StatefulSet pod's sticky reservation stays, so its address waits for the
pod's successor and only the others' go back to their pools; and the node is forgotten, its
placement and its pods' flows removed from its switch, with a `NodeForgotten` Event on the Node.

Freeing live addresses is the worst a collector can do, so this is two-phased like the leak
collector: a node found gone in the watch cache on two passes in a row is read from the API server
itself (`node_live`) and forgotten only if that read agrees; an API error keeps it for the next
pass. A node that comes back before (Ready again, or re-created) is left alone. One that comes back
after registers again (`PUT /v1/nodes/<n>`, the agent does it on the 404 of its next sync) and
re-adds its live pods with the addresses and MACs they have (node_agent/sync.py), which nobody took
meanwhile: released addresses cool down first. While its Node is gone, or NotReady past the grace,
registering is refused (`refusal`), so a node the cluster has lost cannot flap back in.

`verdict` decides (pure, given the Node's JSON and the time); `NodeLifecycle` reads and acts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from controller.errors import ControllerError, NotFound, TemporaryError
from controller.leaks import confirmed, repeat
from controller.logs import kv

if TYPE_CHECKING:
    from controller.store import Pod

LOG = logging.getLogger("underlay.nodes")
GRACE = 300.0  # Kubernetes' own default for evicting pods from a NotReady node (5 min)
INTERVAL = 30.0
EVENT_REASON = "NodeForgotten"


class Nodes(Protocol):
    def node(self, name: str) -> Mapping[str, Any] | None:
        """The Node from a watch cache (a miss reads the API); raises TemporaryError."""

    def node_live(self, name: str) -> Mapping[str, Any] | None:
        """The Node read from the API server itself; raises TemporaryError."""

    def event(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Warning") -> None:
        """Record a Kubernetes Event about `involved` (never fails the caller)."""


class Forgetter(Protocol):
    def node_names(self) -> list[str]: ...

    def forget_node(self, name: str, *, reason: str) -> list[Pod]:
        """Release the node's pods and forget it; the pods released."""


def ready_since(node: Mapping[str, Any]) -> tuple[bool, float | None]:
    """(Ready, since when in epoch seconds, None when unsaid): a Node without a Ready condition is
    taken as Ready (a Node just made, whose kubelet has not reported yet)."""
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True", _epoch(condition.get("lastTransitionTime"))
    return True, None


def verdict(name: str, node: Mapping[str, Any] | None, *, now: float, grace: float) -> str | None:
    """Why the cluster has lost node `name` (what each release records), or None while it has not."""
    if node is None:
        return f"node {name}: its Node object was deleted"
    ready, since = ready_since(node)
    if ready or since is None or now - since < grace:
        return None
    return f"node {name}: NotReady for {now - since:.0f}s (more than node_grace {grace:.0f}s)"


def refusal(name: str, node: Mapping[str, Any] | None, *, now: float, grace: float) -> ControllerError | None:
    """Why node `name` may not register now: the cluster does not know it (404), or has lost it."""
    if node is None:
        return NotFound(f"node {name}: no Node object of that name in the cluster; a node the cluster does not "
                        "know cannot register")
    why = verdict(name, node, now=now, grace=grace)
    return None if why is None else TemporaryError(f"{why}: it registers once Ready again", delay=10.0)


def _epoch(timestamp: Any) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Report:
    forgotten: tuple[tuple[str, str, int], ...] = ()  # (node, why, pods released)
    suspects: tuple[str, ...] = ()  # found lost on this pass, to be confirmed by the next
    kept: tuple[tuple[str, str], ...] = ()  # confirmed from the cache, but the live read failed


class NodeLifecycle:
    """The two-pass check over a service's nodes (state: the last pass's suspects)."""

    def __init__(self, service: Forgetter, nodes: Nodes, *, now: Callable[[], float], grace: float = GRACE) -> None:
        self.service, self.nodes, self.now, self.grace = service, nodes, now, grace
        self._suspects: dict[str, str] = {}

    def run_pass(self) -> Report:
        found = {}
        for name in self.service.node_names():
            try:
                why = verdict(name, self.nodes.node(name), now=self.now(), grace=self.grace)
            except TemporaryError:
                continue  # judged on a later pass
            if why is not None:
                found[name] = why
        act, first = confirmed(self._suspects, found)
        forgotten, kept = [], []
        for name in sorted(act):
            try:
                why = verdict(name, self.nodes.node_live(name), now=self.now(), grace=self.grace)
            except TemporaryError as err:
                kept.append((name, str(err)))
                first[name] = act[name]
                continue
            if why is not None:
                forgotten.append((name, why, len(self.service.forget_node(name, reason=why))))
                self._tell(name, why, pods=forgotten[-1][2])
        self._suspects = first
        report = Report(tuple(forgotten), tuple(sorted(first)), tuple(kept))
        self._log(report)
        return report

    def _tell(self, name: str, why: str, *, pods: int) -> None:
        """An Event on the Node, where `kubectl describe node` (or `get events`, once it is gone) shows it."""
        self.nodes.event({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}, reason=EVENT_REASON,
                         message=f"{why}: {pods} pod(s) released and their flows removed")

    def _log(self, report: Report) -> None:
        for name, why, pods in report.forgotten:
            LOG.warning(kv("node forgotten", node=name, reason=why, pods_released=pods))
        for name, error in report.kept:
            LOG.warning(kv("lost node kept", node=name, error=error))

    def run(self, stop: threading.Event, *, interval: float = INTERVAL) -> None:
        """Pass after pass until `stop` is set (the controller's thread for it)."""
        repeat(self.run_pass, stop, interval=interval, what="node lifecycle")
