"""The controller's store on the Kubernetes API (`store = "kubernetes"`): controller/store.py's
`Store` with IPAllocation objects for addresses and a Node annotation for each node's uplink.

The store keeps the same tables in memory as the SQLite store (pods, sticky reservations, release
times, nodes): that is the state the service believes, and each address's IPAllocation is made to
match it (allocations.py says what an address's object looks like for each state).

One rule makes two controllers safe without a lock: **only writes that take an address wait for
the API, and they are conditional**. `put_pod` creates the address's object (or rebinds one in
Reserved/Cooldown with the resourceVersion it was read at) before it returns; `AlreadyExists` or a
changed object means someone else holds the address, and `put_pod` raises `AddressTaken` naming
them. Every other write only ever frees an address or keeps it taken (Bound -> Cooldown or
Reserved, Cooldown -> deleted, a rollback's delete), so it can wait for `sync()`: while it is not
written, the API shows the address as taken, never as free when the service holds it. `sync()`
writes everything pending in parallel, and concurrent callers share that work (group commit).
Those writes are conditional too: an object someone else changed since we wrote it is left alone.

A failed write is kept and tried again: `sync()` raises `TemporaryError` once the API has refused
for `write_timeout` (the caller's request fails, what the service expects of a failed commit), and
the next `sync()` tries again, so the API catches up once it is back. Only a write the API refuses
for good (RBAC, a schema that does not fit) leaves the store refusing writes (`failure`): the
controller must be restarted to reload what the API holds, as with a failed SQLite commit.

Where nodes' uplinks live: in an annotation on the node's own Node object (`underlay.io/uplink`).
It is an observation about that node, read back on restart so the switch keeps its flows (0
flow-mods); it goes away with the node; `kubectl describe node` shows it; and a JSON merge patch
writes it without reading (no lost update with the kubelet, which writes status, not metadata).
A node without a Node object (nothing to annotate) is logged and relearned after a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from controller.errors import ControllerError, TemporaryError
from controller.kube.allocations import Phase, Slot, from_object, name_for, to_object
from controller.kube.client import IPALLOCATIONS, NODES, AlreadyExists, Kube, Missing, Object, Outdated
from controller.logs import kv
from controller.store import AddressTaken, Node, Pod, Snapshot, StoreError, Writes

LOG = logging.getLogger("underlay.store")
UPLINK_ANNOTATION = "underlay.io/uplink"
CLAIM_TIMEOUT = 2.0  # seconds put_pod retries a transient API error (it runs under the service's lock)
ATTEMPTS = 5  # reads after a conflict before giving up on one address
Known = tuple[str, Slot]  # (resourceVersion, what we wrote or read there)


class KubeStore:
    """`Store` on the API server that `kube` talks to."""

    def __init__(
        self,
        kube: Kube,
        *,
        now: Callable[[], float] = time.time,
        cooldown: Callable[[str], float] | float = 30.0,
        write_timeout: float = 10.0,
        sweep_interval: float = 10.0,
        workers: int = 8,
    ) -> None:
        """`cooldown(pool)`: seconds a released address stays in Cooldown before its object goes."""
        self.kube, self.now = kube, now
        self.cooldown = cooldown if callable(cooldown) else (lambda _pool, seconds=float(cooldown): seconds)
        self.write_timeout, self.sweep_interval = write_timeout, sweep_interval
        self._lock = threading.RLock()  # the tables, `_known` and `_pending`
        self._tables = _Tables()
        self._known: dict[str, Known] = {}
        self._pending: dict[str, int] = {}  # address -> the block that changed it last
        self._pending_nodes: dict[str, int] = {}
        self._blocks = 0
        self._flush = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]  # one address is written by one thread at a time
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kube-store")
        self._failed: str | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- the Store protocol ----------------------------------------------------------------------

    def load(self) -> Snapshot:
        """Everything from the API: every IPAllocation and every Node's uplink annotation (after
        writing what is pending, so a reload sees this store's own writes)."""
        if self._pending or self._pending_nodes:
            self.sync()
        objects = [obj for page in self.kube.list_pages(IPALLOCATIONS.path()) for obj in page.get("items", ())]
        nodes = [node for page in self.kube.list_pages(NODES.path()) for node in page.get("items", ())]
        tables = _Tables()
        known: dict[str, Known] = {}
        for obj in objects:
            ip, slot = from_object(obj)
            known[ip] = (obj["metadata"]["resourceVersion"], slot)
            tables.restore(ip, slot)
        for obj in nodes:
            node = _node(obj)
            if node is not None:
                tables.nodes[node.name] = node
        with self._lock:
            self._tables, self._known = tables, known
            self._pending.clear()
            self._pending_nodes.clear()
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_forever, name="kube-store-sweep", daemon=True)
            self._sweeper.start()
        return tables.snapshot()

    @contextmanager
    def transaction(self) -> Iterator[Writes]:
        if self._failed:
            raise StoreError(f"store kubernetes: refusing writes after a write the API refused ({self._failed})")
        writes = _KubeWrites(self)
        try:
            yield writes
        except BaseException:
            with self._lock:
                writes.undo()
                self._mark(writes.addresses)
            self._converge_all(writes.addresses)  # take back what put_pod created (or leave it pending)
            raise
        with self._lock:
            self._mark(writes.addresses, writes.nodes)

    def _mark(self, addresses: Iterable[str], nodes: Iterable[str] = ()) -> None:
        """Record a block's changes as pending (under the lock)."""
        self._blocks += 1
        self._pending.update(dict.fromkeys(addresses, self._blocks))
        self._pending_nodes.update(dict.fromkeys(nodes, self._blocks))

    @property
    def failure(self) -> str | None:
        return None if self._failed is None else f"store kubernetes: a write was refused for good ({self._failed})"

    def sync(self) -> None:
        """Write every block written before the call. A caller that waited while another thread
        wrote finds its blocks written and returns at once: that is the group commit."""
        with self._lock:
            target = self._blocks
        deadline = time.monotonic() + self.write_timeout
        with self._flush:
            while True:
                if self._failed:
                    raise StoreError(f"store kubernetes: a write was refused earlier ({self._failed})")
                with self._lock:
                    addresses = [ip for ip, block in self._pending.items() if block <= target]
                    nodes = [name for name, block in self._pending_nodes.items() if block <= target]
                if not addresses and not nodes:
                    return
                errors = [e for e in self._converge_all(addresses, nodes) if e is not None]
                if errors and time.monotonic() > deadline:
                    raise TemporaryError(
                        f"store kubernetes: {len(errors)} writes not accepted by the API server: {errors[0]}",
                        delay=1.0,
                    )
                if errors:
                    self._stop.wait(min(0.5, max(0.05, getattr(errors[0], "delay", 0.1))))

    def close(self) -> None:
        self._stop.set()
        try:
            if not self._failed:
                self.sync()
        finally:
            self._executor.shutdown(wait=True)

    # -- reading what the API holds --------------------------------------------------------------

    def sweep(self) -> None:
        """Delete the objects of addresses whose cooldown is over (and forget their release)."""
        now = self.now()
        with self._lock:
            expired = [ip for ip, at in self._tables.released.items()
                       if self._tables.free(ip) and now >= at + self.cooldown(self._tables.pool(ip))]  # fmt: skip
            self._mark(expired)
        if expired:
            self.sync()

    def _sweep_forever(self) -> None:
        while not self._stop.wait(self.sweep_interval):
            try:
                self.sweep()
            except (ControllerError, StoreError) as err:
                LOG.warning(kv("cooldown sweep failed", error=err))

    def _read(self, ip: str) -> Known | None:
        try:
            obj = self.kube.get(IPALLOCATIONS.path(name=name_for(ip)))
        except Missing:
            return None
        return obj["metadata"]["resourceVersion"], from_object(obj)[1]

    # -- writing ---------------------------------------------------------------------------------

    def _stripe(self, ip: str) -> threading.Lock:
        return self._stripes[zlib.crc32(ip.encode()) % len(self._stripes)]

    def claim(self, pod: Pod) -> None:
        """Take `pod.ip` for `pod` in the API now: create its object, or rebind ours (Reserved for
        this pod's sticky key, Cooldown) at the version we know. Raises AddressTaken."""
        desired = Slot(Phase.BOUND, pod.pool, pod, pod.sticky)
        deadline = time.monotonic() + CLAIM_TIMEOUT
        with self._stripe(pod.ip):
            basis, trusted = self._known.get(pod.ip), True  # what we wrote or loaded: the service decided on it
            for _ in range(ATTEMPTS):
                try:
                    if basis is not None and not trusted:
                        _check_free(pod, basis[1])
                    if basis is not None and basis[1] == desired:
                        return
                    self._write(pod.ip, desired, basis)
                    return
                except (AlreadyExists, Outdated):
                    basis, trusted = self._read(pod.ip), False  # changed by someone else: look at it
                except Missing as err:
                    if basis is None:  # the collection itself: no such kind
                        raise StoreError(f"store kubernetes: IPAllocation is not served (is its CRD installed?): {err}") from err
                    basis = None  # deleted (its cooldown ended): create it
                except TemporaryError:
                    if time.monotonic() > deadline:
                        raise
                    self._stop.wait(0.1)
            raise TemporaryError(f"pod {pod.owner}: IPAllocation {pod.ip} keeps changing; retry", delay=1.0)

    def _write(self, ip: str, desired: Slot | None, basis: Known | None) -> None:
        """One conditional write from `basis` to `desired`; raises what the API answers."""
        path = IPALLOCATIONS.path(name=name_for(ip))
        if desired is None:
            if basis is not None:
                self.kube.delete(path, resource_version=basis[0])
            with self._lock:
                self._known.pop(ip, None)
            return
        if basis is None:
            obj = self.kube.create(IPALLOCATIONS.path(), to_object(ip, desired))
        else:
            obj = self.kube.replace(path, to_object(ip, desired, resource_version=basis[0]))
        obj = self._status(ip, obj, desired)
        with self._lock:
            self._known[ip] = (obj["metadata"]["resourceVersion"], desired)

    def _status(self, ip: str, obj: Object, desired: Slot) -> Object:
        """Write the status again if the API server dropped it (a CRD with a status subresource
        ignores status on create and update: then the phase takes a second request)."""
        wanted = to_object(ip, desired)["status"]
        if obj.get("status") == wanted:
            return obj
        return self.kube.replace(IPALLOCATIONS.path(name=name_for(ip), sub="status"), dict(obj, status=wanted))

    def _converge_all(self, addresses: Iterable[str], nodes: Iterable[str] = ()) -> list[Exception | None]:
        jobs = [self._executor.submit(self._converge, ip) for ip in addresses]
        jobs += [self._executor.submit(self._put_node, name) for name in nodes]
        return [job.result() for job in jobs]

    def _converge(self, ip: str) -> Exception | None:
        """Make one address's object what the tables say; None when done, else the error."""
        with self._stripe(ip):
            with self._lock:
                block, desired = self._pending.get(ip), self._tables.slot(ip, now=self.now(), cooldown=self.cooldown)
            basis = self._known.get(ip)
            try:
                for _ in range(ATTEMPTS):
                    try:
                        if basis is None or basis[1] != desired:
                            self._write(ip, desired, basis)
                        break
                    except (AlreadyExists, Outdated):
                        basis = self._read(ip)
                        if basis is not None and _foreign(basis[1], desired):
                            LOG.warning(kv("allocation changed by someone else, left alone", ip=ip, now=_holder(basis[1])))
                            with self._lock:
                                self._known[ip] = basis
                            break
                    except Missing:
                        basis = None
            except TemporaryError as err:
                return err
            except ControllerError as err:  # the API refuses it for good: the tables can't be trusted
                self._failed = str(err)
                LOG.error(kv("store write refused", ip=ip, error=err))
                return err
            with self._lock:
                if desired is None and self._tables.free(ip):
                    self._tables.forget(ip)
                if self._pending.get(ip) == block:
                    del self._pending[ip]
        return None

    def _put_node(self, name: str) -> Exception | None:
        with self._lock:
            block, node = self._pending_nodes.get(name), self._tables.nodes.get(name)
        if node is not None:
            value = json.dumps({"mac": node.mac, "ip": node.ip,
                                "dpid": None if node.dpid is None else f"{node.dpid:#x}", "port": node.port})  # fmt: skip
            try:
                self.kube.patch(NODES.path(name=name), {"metadata": {"annotations": {UPLINK_ANNOTATION: value}}})
            except Missing:
                LOG.warning(kv("node uplink not kept: no Node object of that name", node=name))
            except TemporaryError as err:
                return err
        with self._lock:
            if self._pending_nodes.get(name) == block:
                del self._pending_nodes[name]
        return None


class _Tables:
    """The store's state as the SQLite store has it, indexed by address (not thread-safe: the
    store's lock guards it). `last` keeps who held a released address, for its object's spec."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Pod] = {}
        self.at: dict[str, Pod] = {}
        self.sticky: dict[str, str] = {}
        self.reserved_for: dict[str, str] = {}
        self.released: dict[str, float] = {}
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
            self.sticky[slot.sticky] = ip
            self.reserved_for[ip] = slot.sticky
        if slot.released_at is not None:
            self.released[ip] = slot.released_at

    def snapshot(self) -> Snapshot:
        return Snapshot(
            nodes=tuple(sorted(self.nodes.values(), key=lambda node: node.name)),
            pods=tuple(sorted(self.pods.values(), key=lambda pod: pod.created_at)),
            sticky=dict(self.sticky),
            released=dict(self.released),
        )

    def pool(self, ip: str) -> str:
        return self.pools.get(ip, "")

    def free(self, ip: str) -> bool:
        return ip not in self.at and ip not in self.reserved_for

    def slot(self, ip: str, *, now: float, cooldown: Callable[[str], float]) -> Slot | None:
        """What the address's object must be now (None: no object)."""
        pool, pod, sticky = self.pool(ip), self.at.get(ip), self.reserved_for.get(ip)
        if pod is not None:
            return Slot(Phase.BOUND, pool, pod, pod.sticky)
        released = self.released.get(ip)
        if sticky is not None:
            return Slot(Phase.RESERVED, pool, self.last.get(ip), sticky, released)
        if released is not None and now < released + cooldown(pool):
            return Slot(Phase.COOLDOWN, pool, self.last.get(ip), None, released)
        return None

    def forget(self, ip: str) -> None:
        """The address has no object any more: drop what only its object needed."""
        for table in (self.released, self.last, self.pools):
            table.pop(ip, None)


class _KubeWrites:
    """One block's writes: applied to the tables at once, with an undo log for a block that raises."""

    def __init__(self, store: KubeStore) -> None:
        self.store, self.tables = store, store._tables
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
        with self.store._lock:
            self._set(self.tables.nodes, node.name, node)
        self.nodes.add(node.name)

    def put_pod(self, pod: Pod) -> None:
        """Takes the address in the API before it returns (see the module docstring)."""
        with self.store._lock:
            before = self.tables.pods.get(pod.key)
            if before is None or before.ip != pod.ip:
                holder = self.tables.at.get(pod.ip)
                if holder is not None and holder.key != pod.key:
                    raise StoreError(f"store refused put_pod {pod.key}: {pod.ip} is held by {holder.owner}")
        self.store.claim(pod)
        with self.store._lock:
            if before is not None and before.ip != pod.ip:
                self._set(self.tables.at, before.ip, None)
                self.addresses.add(before.ip)
            self._set(self.tables.pods, pod.key, pod)
            self._set(self.tables.at, pod.ip, pod)
            self._set(self.tables.pools, pod.ip, pod.pool)
            self._set(self.tables.released, pod.ip, None)
        self.addresses.add(pod.ip)

    def delete_pod(self, container_id: str, ifname: str) -> None:
        with self.store._lock:
            pod = self.tables.pods.get((container_id, ifname))
            if pod is None:
                return
            self._set(self.tables.pods, pod.key, None)
            self._set(self.tables.at, pod.ip, None)
            self._set(self.tables.last, pod.ip, pod)
        self.addresses.add(pod.ip)

    def reserve(self, sticky: str, ip: str) -> None:
        with self.store._lock:
            previous = self.tables.sticky.get(sticky)
            if previous is not None and previous != ip:
                self._set(self.tables.reserved_for, previous, None)
                self.addresses.add(previous)
            self._set(self.tables.sticky, sticky, ip)
            self._set(self.tables.reserved_for, ip, sticky)
        self.addresses.add(ip)

    def unreserve(self, sticky: str) -> None:
        with self.store._lock:
            ip = self.tables.sticky.get(sticky)
            if ip is None:
                return
            self._set(self.tables.sticky, sticky, None)
            self._set(self.tables.reserved_for, ip, None)
        self.addresses.add(ip)

    def mark_released(self, ip: str, at: float) -> None:
        with self.store._lock:
            self._set(self.tables.released, ip, at)
        self.addresses.add(ip)


def _check_free(pod: Pod, slot: Slot) -> None:
    """May `pod` take an address whose object someone else changed to `slot`?"""
    if slot.phase is Phase.BOUND and slot.holder != pod.key:
        raise _taken(pod.ip, slot)
    if slot.phase is Phase.RESERVED and slot.sticky != pod.sticky:
        raise _taken(pod.ip, slot)


def _taken(ip: str, slot: Slot) -> AddressTaken:
    pod = slot.pod
    return AddressTaken(ip, owner=_holder(slot), pool=slot.pool,
                        container_id="" if pod is None else pod.container_id, ifname="" if pod is None else pod.ifname)  # fmt: skip


def _holder(slot: Slot) -> str:
    if slot.phase is Phase.RESERVED:
        return f"sticky key {slot.sticky}"
    return "an unknown pod" if slot.pod is None else slot.pod.owner


def _foreign(found: Slot, desired: Slot | None) -> bool:
    """Someone else's interface holds the address now: not ours to change."""
    return found.phase is Phase.BOUND and found.holder != (None if desired is None else desired.holder)


def _node(obj: Object) -> Node | None:
    raw = (obj["metadata"].get("annotations") or {}).get(UPLINK_ANNOTATION)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        dpid = value.get("dpid")
        return Node(obj["metadata"]["name"], str(value["mac"]), str(value["ip"]),
                    None if dpid is None else int(dpid, 16), value.get("port"))  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError):
        LOG.warning(kv("node uplink annotation unreadable, ignored", node=obj["metadata"]["name"], value=raw))
        return None
