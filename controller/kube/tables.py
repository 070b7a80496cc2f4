"""The Kubernetes store's tables: what the service believes, as the SQLite store keeps it. Pure.

The same four tables as the SQLite store (pods, sticky reservations, release times, nodes), indexed
by address too, because each address has one IPAllocation object and `slot()` says what it must be.
`TableWrites` is one transaction's writes: applied at once, with an undo log so a block that raises
leaves the tables as they were (the store then writes back whatever the block had already taken).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from controller.kube.allocations import NO_POOL, Phase, Slot
from controller.store import Node, Pod, Snapshot, StoreError


class Tables:
    """The store's state as the SQLite store has it, indexed by address (not thread-safe: the
    store's lock guards it). `last` keeps who held a released address, for its object's spec."""

    def __init__(self, *, pool_of: Callable[[str], str | None] = lambda ip: None) -> None:
        self.pool_of = pool_of  # for an address no pod of these tables held: the pool that has it now
        self.pods: dict[tuple[str, str], Pod] = {}
        self.at: dict[str, Pod] = {}
        self.sticky: dict[tuple[str, int], str] = {}  # (sticky key, family) -> address
        self.reserved_for: dict[str, str] = {}
        self.released: dict[str, float] = {}
        self.reasons: dict[str, str] = {}  # why an address was released, when not by its pod's DEL
        self.last: dict[str, Pod] = {}
        self.pools: dict[str, str] = {}
        self.nodes: dict[str, Node] = {}

    def restore(self, ip: str, slot: Slot) -> None:
        self.pools[ip] = slot.pool
        if slot.phase is Phase.BOUND and slot.pod is not None:
            self.pods[slot.pod.key] = self.at[ip] = slot.pod
        elif slot.pod is not None:
            self.last[ip] = slot.pod
        if slot.sticky is not None and slot.phase is not Phase.COOLDOWN:
            self.sticky[(slot.sticky, _family(ip))] = ip
            self.reserved_for[ip] = slot.sticky
        if slot.released_at is not None:
            self.released[ip] = slot.released_at
        if slot.reason is not None:
            self.reasons[ip] = slot.reason

    def snapshot(self) -> Snapshot:
        return Snapshot(
            nodes=tuple(sorted(self.nodes.values(), key=lambda node: node.name)),
            pods=tuple(sorted(self.pods.values(), key=lambda pod: pod.created_at)),
            sticky={key: ip for (key, family), ip in self.sticky.items() if family == 4},
            released=dict(self.released),
            sticky6={key: ip for (key, family), ip in self.sticky.items() if family == 6},
        )

    def missing(self) -> set[str]:
        """Addresses a pod holds that have no slot of their own: a dual-stack pod's other address
        whose object was not written before a crash (`restore` saw one object of the two)."""
        return {ip for pod in self.pods.values() for ip in pod.ips if ip not in self.at}

    def pool(self, ip: str) -> str:
        return self.pools.get(ip) or self.pool_of(ip) or NO_POOL

    def free(self, ip: str) -> bool:
        return ip not in self.at and ip not in self.reserved_for

    def slot(self, ip: str, *, now: float, cooldown: Callable[[str], float]) -> Slot | None:
        """What the address's object must be now (None: no object)."""
        pool, pod, sticky = self.pool(ip), self.at.get(ip), self.reserved_for.get(ip)
        if pod is not None:
            return Slot(Phase.BOUND, pool, pod, pod.sticky)
        released, reason = self.released.get(ip), self.reasons.get(ip)
        if sticky is not None:
            return Slot(Phase.RESERVED, pool, self.last.get(ip), sticky, released, reason)
        if released is not None and now < released + cooldown(pool):
            return Slot(Phase.COOLDOWN, pool, self.last.get(ip), None, released, reason)
        return None

    def forget(self, ip: str) -> None:
        """The address has no object any more: drop what only its object needed."""
        for table in (self.released, self.reasons, self.last, self.pools):
            table.pop(ip, None)


class TableWrites:
    """One block's writes: applied to the tables at once, with an undo log for a block that raises."""

    def __init__(self, tables: Tables, *, lock: threading.RLock, claim: Callable[[Pod], None]) -> None:
        self.tables, self._lock, self._claim = tables, lock, claim
        self.addresses: set[str] = set()
        self.nodes: set[str] = set()
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        """Change one entry (value None: remove it), remembering what it was."""
        self._undo.append((table, key, table.get(key)))
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    def undo(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is None:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    def put_node(self, node: Node) -> None:
        with self._lock:
            self._set(self.tables.nodes, node.name, node)
        self.nodes.add(node.name)

    def delete_node(self, name: str) -> None:
        with self._lock:
            self._set(self.tables.nodes, name, None)
        self.nodes.add(name)

    def put_pod(self, pod: Pod) -> None:
        """`claim`s the address before the tables change (the Kubernetes store takes it in the API:
        see controller/kube/store.py), so a pod whose address is taken changes nothing."""
        with self._lock:
            before = self.tables.pods.get(pod.key)
            for ip in pod.ips:
                holder = self.tables.at.get(ip)
                if holder is not None and holder.key != pod.key:
                    raise StoreError(f"store refused put_pod {pod.key}: {ip} is held by {holder.owner}")
        self._claim(pod)  # every address of the pod, or none (it raises having given back what it took)
        with self._lock:
            for ip in () if before is None else set(before.ips) - set(pod.ips):
                self._set(self.tables.at, ip, None)
                self.addresses.add(ip)
            self._set(self.tables.pods, pod.key, pod)
            for ip in pod.ips:
                self._set(self.tables.at, ip, pod)
                self._set(self.tables.pools, ip, pod.pool)
                self._set(self.tables.released, ip, None)
                self._set(self.tables.reasons, ip, None)
        self.addresses.update(pod.ips)

    def delete_pod(self, container_id: str, ifname: str) -> None:
        with self._lock:
            pod = self.tables.pods.get((container_id, ifname))
            if pod is None:
                return
            self._set(self.tables.pods, pod.key, None)
            for ip in pod.ips:
                self._set(self.tables.at, ip, None)
                self._set(self.tables.last, ip, pod)
        self.addresses.update(pod.ips)

    def reserve(self, sticky: str, ip: str) -> None:
        """The key keeps `ip`, in place of its address of that family."""
        with self._lock:
            previous = self.tables.sticky.get((sticky, _family(ip)))
            if previous is not None and previous != ip:
                self._set(self.tables.reserved_for, previous, None)
                self.addresses.add(previous)
            self._set(self.tables.sticky, (sticky, _family(ip)), ip)
            self._set(self.tables.reserved_for, ip, sticky)
        self.addresses.add(ip)

    def unreserve(self, sticky: str) -> None:
        with self._lock:
            for family in (4, 6):
                ip = self.tables.sticky.get((sticky, family))
                if ip is not None:
                    self._set(self.tables.sticky, (sticky, family), None)
                    self._set(self.tables.reserved_for, ip, None)
                    self.addresses.add(ip)

    def mark_released(self, ip: str, at: float, *, reason: str | None = None) -> None:
        with self._lock:
            self._set(self.tables.released, ip, at)
            self._set(self.tables.reasons, ip, reason)
        self.addresses.add(ip)


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4
