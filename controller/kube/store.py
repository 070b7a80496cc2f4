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
writes everything pending in parallel, and concurrent callers share that work (group commit), but
each waits for its own blocks' writes only. Those writes are conditional too: an object someone
else changed since we wrote it is left alone.

A failed write is kept and tried again: `sync()` raises `TemporaryError` once the API has refused
its writes for `write_timeout` (the caller's request fails, what the service expects of a failed
commit), and a background thread keeps trying every second, so the API catches up once it is back.
Only a write the API refuses for good (RBAC, a schema that does not fit) leaves the store refusing
writes (`failure`): the controller must be restarted to reload what the API holds, as with a
failed SQLite commit.

Where nodes' uplinks live: in an annotation on the node's own Node object (`underlay.io/uplink`).
It is an observation about that node, read back on restart so the switch keeps its flows (0
flow-mods); it goes away with the node; `kubectl describe node` shows it; and a JSON merge patch
writes it without reading (no lost update with the kubelet, which writes status, not metadata).
`sync()` tries it once, briefly, and leaves it to the background when the API server is away: a
node is located from the frames its switch sends up, by a thread that must keep up with them, and
an uplink lost in a crash is only learned again. A node without a Node object (nothing to annotate) is logged and
relearned after a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NamedTuple

import urllib3

from controller.errors import ControllerError, TemporaryError
from controller.kube.allocations import Phase, Slot, from_object, name_for, same_meaning, same_spec, to_object
from controller.kube.client import IPALLOCATIONS, NODES, AlreadyExists, Kube, Missing, Object, Outdated
from controller.kube.tables import Tables, TableWrites
from controller.logs import kv
from controller.store import AddressTaken, Node, Pod, Snapshot, StoreError, Writes

LOG = logging.getLogger("underlay.store")
UPLINK_ANNOTATION = "underlay.io/uplink"
CLAIM_TIMEOUT = 2.0  # seconds put_pod retries a transient API error (it runs under the service's lock)
ATTEMPTS = 5  # reads after a conflict before giving up on one address
NODE_TIMEOUT = urllib3.Timeout(connect=1.0, read=2.0)  # a node uplink's try from sync (see there)


class Known(NamedTuple):
    """An address's object as this store last wrote or read it."""

    version: str  # its resourceVersion: what a conditional write is based on
    slot: Slot
    status: Mapping[str, Any]  # as served (a status the store has not written yet differs)


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
        pool_of: Callable[[str], str | None] = lambda ip: None,
    ) -> None:
        """`cooldown(pool)`: seconds a released address stays in Cooldown before its object goes;
        `pool_of(ip)`: the pool an address belongs to, for one no pod held here (a reservation made
        for an address alone)."""
        self.kube, self.now, self.pool_of = kube, now, pool_of
        self.cooldown = cooldown if callable(cooldown) else (lambda _pool, seconds=float(cooldown): seconds)
        self.write_timeout, self.sweep_interval = write_timeout, sweep_interval
        self._lock = threading.RLock()  # the tables, `_known`, `_pending`, `_late`
        self._tables = Tables(pool_of=pool_of)
        self._known: dict[str, Known] = {}
        self._pending: dict[str, int] = {}  # address -> the block that changed it last
        self._pending_nodes: dict[str, int] = {}
        self._late: set[str] = set()  # addresses whose status only lacks its boundAt (see _write)
        self._status_apart: bool | None = None  # IPAllocation has a status subresource (see `_write`)
        self._blocks = 0
        self._mine = threading.local()  # what each thread's blocks changed: see `sync`
        self._last_error: Exception | None = None
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
        if self._pending:
            with self._flush:
                self._round()
        self._write_nodes()
        tables, known = Tables(pool_of=self.pool_of), {}
        for page in self.kube.list_pages(IPALLOCATIONS.path()):  # page by page: see Reflector._list
            for obj in page.get("items", ()):
                ip, slot = from_object(obj)
                known[ip] = Known(obj["metadata"]["resourceVersion"], slot, obj.get("status") or {})
                tables.restore(ip, slot)
        for page in self.kube.list_pages(NODES.path()):
            for obj in page.get("items", ()):
                node = _node(obj)
                if node is not None:
                    tables.nodes[node.name] = node
        for ip in tables.missing():  # a dual-stack pod's second object, lost in a crash: write it
            pod = next(pod for pod in tables.pods.values() if ip in pod.ips)
            tables.restore(ip, Slot(Phase.BOUND, pod.pool, pod, pod.sticky))
        with self._lock:
            self._tables, self._known = tables, known
            self._pending.clear()
            self._pending_nodes.clear()
            self._mark(ip for ip in tables.at if ip not in known)
            self._late = {ip for ip, entry in known.items() if not entry.status}  # created, status not written yet
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._background, name="kube-store", daemon=True)
            self._sweeper.start()
        return tables.snapshot()

    @contextmanager
    def transaction(self) -> Iterator[Writes]:
        if self._failed:
            raise StoreError(f"store kubernetes: refusing writes after a write the API refused ({self._failed})")
        writes = TableWrites(self._tables, lock=self._lock, claim=self.claim)
        try:
            yield writes
        except BaseException:
            with self._lock:
                writes.undo()
                self._mark(writes.addresses)
            self._converge_all(writes.addresses)  # take back what put_pod took (or leave it pending)
            raise
        with self._lock:
            self._mark(writes.addresses, writes.nodes)
        addresses, nodes = self._touched()
        addresses.update(writes.addresses)
        nodes.update(writes.nodes)

    def _mark(self, addresses: Iterable[str], nodes: Iterable[str] = ()) -> None:
        """Record a block's changes as pending (under the lock)."""
        self._blocks += 1
        self._pending.update(dict.fromkeys(addresses, self._blocks))
        self._pending_nodes.update(dict.fromkeys(nodes, self._blocks))

    def _touched(self) -> tuple[set[str], set[str]]:
        """The addresses and nodes this thread's blocks changed since its last `sync`."""
        if not hasattr(self._mine, "addresses"):
            self._mine.addresses, self._mine.nodes = set(), set()
        return self._mine.addresses, self._mine.nodes

    @property
    def failure(self) -> str | None:
        return None if self._failed is None else f"store kubernetes: a write was refused for good ({self._failed})"

    def sync(self) -> None:
        """Write what this thread's blocks changed. Each round writes every pending address, so
        callers waiting at the same time share the work (the group commit), but each one waits for
        its own writes only: another's that the API keeps refusing does not hold it up. A node's
        uplink gets one short try and is otherwise left to the background: nodes are located from
        their frames by a thread that must keep up with them, not wait for an API server that is
        away, and an uplink lost in a crash is only learned again."""
        mine, nodes = self._touched()
        if nodes:
            self._write_nodes(nodes)
            nodes.clear()
        deadline = time.monotonic() + self.write_timeout
        while True:
            if self._failed:
                raise StoreError(f"store kubernetes: a write was refused earlier ({self._failed})")
            if self._waiting(mine):
                with self._flush:  # one round at a time; a waiter may find its writes done by it
                    if self._waiting(mine):
                        self._round()
            left = self._waiting(mine)
            if not left:
                mine.clear()
                return
            if time.monotonic() > deadline:
                raise TemporaryError(f"store kubernetes: {len(left)} writes not accepted by the API server "
                                     f"({', '.join(sorted(left)[:3])}): {self._last_error}", delay=1.0)  # fmt: skip
            time.sleep(0.1)

    def _waiting(self, addresses: set[str]) -> set[str]:
        with self._lock:
            return {ip for ip in addresses if ip in self._pending}

    def _round(self) -> None:
        """Write every pending address once, in parallel; a permanent refusal fails the store."""
        with self._lock:
            pending = list(self._pending)
        errors = [e for e in self._converge_all(pending) if e is not None]
        if errors:
            self._last_error = errors[0]
        if self._failed:
            raise StoreError(f"store kubernetes: a write was refused ({self._failed})")

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=self.write_timeout)  # it may be writing: let it finish first
        try:
            if not self._failed:
                self.sync()
                with self._flush:
                    self._round()
                self.write_late()
                self._write_nodes()
        finally:
            self._executor.shutdown(wait=True)

    # -- in the background -----------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete the objects of addresses whose cooldown is over (and forget their release)."""
        now = self.now()
        with self._lock:
            expired = [ip for ip, at in self._tables.released.items()
                       if self._tables.free(ip) and now >= at + self.cooldown(self._tables.pool(ip))]  # fmt: skip
            self._mark(expired)
        if expired:
            with self._flush:
                self._round()

    def write_late(self) -> None:
        """Write the statuses put off by `_write` (created objects' boundAt)."""
        with self._lock:
            late, self._late = self._late, set()
        errors = [e for e in self._executor.map(lambda ip: self._converge(ip, exact=True), late) if e is not None]
        if errors:
            LOG.info(kv("statuses not written yet", count=len(errors), error=errors[0]))

    def _write_nodes(self, only: Iterable[str] | None = None) -> None:
        with self._lock:
            nodes = [name for name in (self._pending_nodes if only is None else only) if name in self._pending_nodes]
        errors = [e for e in self._executor.map(self._put_node, nodes) if e is not None]
        if errors:
            LOG.info(kv("node uplinks not written yet", count=len(errors), error=errors[0]))

    def _background(self) -> None:
        """Every second: what nobody waits for (node uplinks, put-off statuses, writes whose sync
        gave up), and now and then the end of cooldowns."""
        swept = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                if self._pending_nodes:
                    self._write_nodes()
                if self._late:
                    self.write_late()
                if self._pending:
                    with self._flush:
                        self._round()
                if time.monotonic() - swept >= self.sweep_interval:
                    swept = time.monotonic()
                    self.sweep()
            except (ControllerError, StoreError) as err:
                LOG.warning(kv("store background writes failed", error=err))

    # -- writing ---------------------------------------------------------------------------------

    def _stripe(self, ip: str) -> threading.Lock:
        return self._stripes[zlib.crc32(ip.encode()) % len(self._stripes)]

    def _read(self, ip: str) -> Known | None:
        try:
            obj = self.kube.get(IPALLOCATIONS.path(name=name_for(ip)))
        except Missing:
            return None
        return Known(obj["metadata"]["resourceVersion"], from_object(obj)[1], obj.get("status") or {})

    def claim(self, pod: Pod) -> None:
        """Take every address of `pod` in the API now, or none: a dual-stack pod whose second
        address cannot be had (taken, the API failing) gives the first back before this raises,
        by writing it as the tables still have it (they change only after the claim)."""
        taken: list[str] = []
        try:
            for ip in pod.ips:
                self._claim_one(pod, ip)
                taken.append(ip)
        except BaseException:
            if taken:
                with self._lock:
                    self._mark(taken)  # a give-back the API refuses now is retried in the background
                self._converge_all(taken)
            raise

    def _claim_one(self, pod: Pod, ip: str) -> None:
        """Take `ip` for `pod` in the API now: create its object, or rebind ours (Reserved for
        this pod's sticky key, Cooldown) at the version we know. Raises AddressTaken."""
        desired = Slot(Phase.BOUND, pod.pool, pod, pod.sticky)
        deadline = time.monotonic() + CLAIM_TIMEOUT
        with self._stripe(ip):
            basis, trusted = self._known.get(ip), True  # what we wrote or loaded: the service decided on it
            for _ in range(ATTEMPTS):
                try:
                    if basis is not None and not trusted:
                        _check_free(pod, ip, basis.slot)
                    if basis is None or basis.slot != desired:
                        self._write(ip, desired, basis)
                    return
                except (AlreadyExists, Outdated):
                    basis, trusted = self._read(ip), False  # changed by someone else: look at it
                except Missing as err:
                    if basis is None:  # the collection itself: no such kind
                        raise StoreError(f"store kubernetes: IPAllocation is not served (is its CRD installed?): {err}") from err
                    basis = None  # deleted (its cooldown ended): create it
                except TemporaryError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            raise TemporaryError(f"pod {pod.owner}: IPAllocation {ip} keeps changing; retry", delay=1.0)

    def _write(self, ip: str, desired: Slot | None, basis: Known | None, *, exact: bool = False) -> None:
        """Conditional writes from `basis` to `desired`; raises what the API answers.

        Without a status subresource one request writes the object, status included. With one
        (deploy/kubernetes/crds has it), the API server keeps the status out of a create or an
        update and the status takes a request of its own; then one status is put off (unless
        `exact`): a created object's, which only lacks its boundAt (a missing phase reads as
        Bound), so an ADD still costs one request; `write_late` writes it within a second or so."""
        path = IPALLOCATIONS.path(name=name_for(ip))
        if desired is None:
            if basis is not None:
                self.kube.delete(path, resource_version=basis.version)
            with self._lock:
                self._known.pop(ip, None)
            return
        wanted = to_object(ip, desired)
        if basis is None or not self._status_subresource():
            if basis is None:
                obj = self.kube.create(IPALLOCATIONS.path(), wanted)
            else:
                obj = self.kube.replace(path, to_object(ip, desired, resource_version=basis.version))
            version, status = obj["metadata"]["resourceVersion"], obj.get("status") or {}
        else:
            version, status = basis.version, basis.status
            spec_first = desired.phase is Phase.RESERVED  # the rule: a Reserved object has a stickyKey
            for part in ("spec", "status") if spec_first else ("status", "spec"):
                version, status = self._write_part(ip, part, wanted, version=version, status=status,
                                                   old=to_object(ip, basis.slot), exact=exact)  # fmt: skip
        with self._lock:
            self._known[ip] = Known(version, desired, status)
            if status != wanted["status"]:
                self._late.add(ip)

    def _status_subresource(self) -> bool:
        """Whether IPAllocation's status is written apart (API discovery says, once)."""
        if self._status_apart is None:
            served = self.kube.get(IPALLOCATIONS.group_path())
            self._status_apart = f"{IPALLOCATIONS.plural}/status" in {r.get("name") for r in served.get("resources", ())}
        return self._status_apart

    def _write_part(
        self, ip: str, part: str, wanted: Object, *, version: str, status: Mapping[str, Any], old: Object, exact: bool
    ) -> tuple[str, Mapping[str, Any]]:
        """Write the spec (with labels) or the status of `wanted` if it differs; (resourceVersion,
        status) after it. Status first unless the object becomes Reserved, so that each write
        leaves an object its CEL rules accept."""
        if part == "spec" and same_spec(old, wanted):
            return version, status
        if part == "status" and (status == wanted["status"] or (not exact and same_meaning(status, wanted["status"]))):
            return version, status
        body = dict(wanted, metadata=dict(wanted["metadata"], resourceVersion=version))
        obj = self.kube.replace(IPALLOCATIONS.path(name=name_for(ip), sub="status" if part == "status" else None), body)
        return obj["metadata"]["resourceVersion"], obj.get("status") or {}

    def _converge_all(self, addresses: Iterable[str]) -> list[Exception | None]:
        return list(self._executor.map(self._converge, addresses))

    def _converge(self, ip: str, *, exact: bool = False) -> Exception | None:
        """Make one address's object what the tables say; None when done, else the error. Not
        `exact`: a status that says the same (see `_write`) will do."""
        with self._stripe(ip):
            with self._lock:
                block, desired = self._pending.get(ip), self._tables.slot(ip, now=self.now(), cooldown=self.cooldown)
            basis = self._known.get(ip)
            try:
                for _ in range(ATTEMPTS):
                    try:
                        if basis is None or basis.slot != desired or (exact and desired is not None and
                                                                      basis.status != to_object(ip, desired)["status"]):  # fmt: skip
                            self._write(ip, desired, basis, exact=exact)
                        break
                    except (AlreadyExists, Outdated):
                        basis = self._read(ip)
                        if basis is not None and _foreign(basis.slot, desired):
                            LOG.warning(kv("allocation changed by someone else, left alone", ip=ip, now=_holder(basis.slot)))
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
                if block is not None and self._pending.get(ip) == block:
                    del self._pending[ip]
        return None

    def _put_node(self, name: str) -> Exception | None:
        with self._lock:
            block, node = self._pending_nodes.get(name), self._tables.nodes.get(name)
        value = None if node is None else json.dumps({  # None: the node was forgotten, so is its uplink
            "mac": node.mac, "ip": node.ip, **({"ip6": node.ip6} if node.ip6 else {}),
            "dpid": None if node.dpid is None else f"{node.dpid:#x}", "port": node.port})
        try:
            self.kube.patch(NODES.path(name=name), {"metadata": {"annotations": {UPLINK_ANNOTATION: value}}},
                            timeout=NODE_TIMEOUT)  # fmt: skip
        except Missing:
            if value is not None:
                LOG.warning(kv("node uplink not kept: no Node object of that name", node=name))
        except TemporaryError as err:
            return err
        except ControllerError as err:  # RBAC: the uplink is relearned after a restart, the rest works
            LOG.error(kv("node uplink not kept", node=name, error=err))
        with self._lock:
            if self._pending_nodes.get(name) == block:
                del self._pending_nodes[name]
        return None


def _check_free(pod: Pod, ip: str, slot: Slot) -> None:
    """May `pod` take `ip`, whose object someone else changed to `slot`?"""
    if slot.phase is Phase.BOUND and slot.holder != pod.key:
        raise _taken(ip, slot)
    if slot.phase is Phase.RESERVED and slot.sticky != pod.sticky:
        raise _taken(ip, slot)


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
                    None if dpid is None else int(dpid, 16), value.get("port"), value.get("ip6"))  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError):
        LOG.warning(kv("node uplink annotation unreadable, ignored", node=obj["metadata"]["name"], value=raw))
        return None
