"""Persistence: the controller's one source of truth, behind a small interface.

The service keeps its working state in memory and writes through to a `Store`; on start it reloads
everything with `load()`. Writes happen inside `transaction()`: all of a block or, when it raises,
none of it. A block is durable only after `sync()`, which makes durable everything written before
the call; concurrent callers share one commit (group commit), so many allocations cost one fsync.
The service writes under its lock and syncs after releasing it. The interface is small on purpose:
the Kubernetes store (controller/kube/store.py) implements the same six writes and `sync` with
custom resources; its `put_pod` may find the address taken by another controller (`AddressTaken`).

What is stored: nodes (uplink MAC and IP, learned switch location), pods (one row per interface:
its lease and where it is placed, written and deleted together), sticky reservations, and the time
each address was last released (for the cooldown, across restarts).

`SqliteStore` keeps one file in WAL mode. The connection is shared between threads and guarded by
a lock. One SQLite transaction stays open across blocks (each block is a SAVEPOINT in it) until the
next `sync()` commits it. A commit that fails (disk full, I/O error) loses every block since the
last one, acknowledged to nobody yet: the store then refuses all writes, and the controller must be
restarted to reload what is durable (retrying an fsync after it failed is not safe).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol


class Mode(enum.Enum):
    MACVLAN = "macvlan"  # the pod has its own MAC on the segment
    IPVLAN = "ipvlan"  # the pod answers at its node's uplink MAC


@dataclass(frozen=True)
class Node:
    """A registered node. `dpid`/`port` are where its uplink MAC was last seen (None: not yet)."""

    name: str
    mac: str
    ip: str
    dpid: int | None = None
    port: int | None = None
    ip6: str | None = None  # the node's own IPv6 address on the uplink, when it registered one


@dataclass(frozen=True)
class Pod:
    """One pod interface: its address and the node it is placed on.

    `mac` is what the pod's link carries for macvlan; for ipvlan it is recorded as allocated but the
    placement follows the node's current MAC.
    """

    container_id: str
    ifname: str
    node: str
    namespace: str
    name: str
    pool: str
    ip: str
    mac: str
    mode: Mode
    sticky: str | None = None
    created_at: float = field(default=0.0, compare=False)
    uid: str | None = None  # the Kubernetes pod's, when the CNI request named it
    ip6: str | None = None  # a dual-stack interface's IPv6 address (`ip` is then its IPv4 one)
    vlan: int | None = None  # its pool's VLAN when it was allocated: the tag its frames carry

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    @property
    def ips(self) -> tuple[str, ...]:
        """Every address of the interface, IPv4 first (one of either family, or one of each)."""
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)

    @property
    def owner(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    sticky: dict[str, str] = field(default_factory=dict)  # sticky key -> its IPv4 address
    released: dict[str, float] = field(default_factory=dict)  # address -> when
    sticky6: dict[str, str] = field(default_factory=dict)  # sticky key -> its IPv6 address


class Writes(Protocol):
    """The changes one transaction can make."""

    def put_node(self, node: Node) -> None: ...
    def delete_node(self, name: str) -> None:
        """The node is gone (controller/nodelife.py): its uplink is not restored after a restart."""
    def put_pod(self, pod: Pod) -> None: ...
    def delete_pod(self, container_id: str, ifname: str) -> None: ...
    def reserve(self, sticky: str, ip: str) -> None:
        """The key keeps `ip`: it replaces the key's address of that family, not the other one."""

    def unreserve(self, sticky: str) -> None:
        """The key keeps nothing (either family)."""

    def mark_released(self, ip: str, at: float, *, reason: str | None = None) -> None:
        """`ip` was released at `at`; `reason` says why when it was not the pod's own DEL (the
        leak collector's finding), for the store to show beside the address."""


class Store(Protocol):
    def load(self) -> Snapshot: ...
    def transaction(self) -> AbstractContextManager[Writes]: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...

    @property
    def failure(self) -> str | None:
        """Why the store refuses writes (a commit failed), or None while it works."""


class StoreError(RuntimeError):
    """The store refused a write (a constraint) or could not be read."""


class AddressTaken(StoreError):
    """`put_pod` found its address held by someone the service does not know of: another
    controller's allocation (the Kubernetes store, where creating an address's object is what
    takes it). Nothing was written for that pod; the block goes on, and the service marks the
    address held by `owner` and picks another."""

    def __init__(self, ip: str, *, owner: str, container_id: str = "", ifname: str = "", pool: str = "") -> None:
        super().__init__(f"{ip} is held by {owner}")
        self.ip, self.owner, self.pool = ip, owner, pool
        self.container_id, self.ifname = container_id, ifname


_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, mac TEXT NOT NULL, ip TEXT NOT NULL, dpid TEXT, port INTEGER);
CREATE TABLE IF NOT EXISTS pods (
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, node TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, pool TEXT NOT NULL,
    ip TEXT NOT NULL UNIQUE, mac TEXT NOT NULL, mode TEXT NOT NULL, sticky TEXT,
    created_at REAL NOT NULL, uid TEXT,
    PRIMARY KEY (container_id, ifname));
CREATE TABLE IF NOT EXISTS sticky (key TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS sticky6 (key TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS released (ip TEXT PRIMARY KEY, at REAL NOT NULL);
"""
# dpid is TEXT (hex): a datapath id is an unsigned 64-bit number, SQLite integers are signed.
# pods.ip is UNIQUE: the database itself refuses to hand one address out twice; pods.ip6 (a
# dual-stack interface's IPv6 address, added by _migrate) has a unique index for the same reason.
# sticky holds IPv4 reservations (as it always did), sticky6 the IPv6 ones: one of each per key.

_POD_FIELDS = tuple(f.name for f in fields(Pod))
_POD_COLUMNS = ", ".join(_POD_FIELDS)
_PUT_POD = (
    f"INSERT INTO pods ({_POD_COLUMNS}) VALUES ({', '.join('?' * len(fields(Pod)))}) "
    f"ON CONFLICT (container_id, ifname) DO UPDATE SET "
    + ", ".join(f"{f.name} = excluded.{f.name}" for f in fields(Pod)[2:])
)


class SqliteStore:
    """The embedded store: one SQLite file (WAL), safe to share between threads."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        """`synchronous=FULL` makes every `sync()` durable (an fsync of the WAL); NORMAL trades the
        last few commits on power loss (not on a crash) for speed."""
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._open = False  # a transaction holds blocks not yet committed
        self._failed: str | None = None

    def _migrate(self) -> None:
        """Columns added since a file was made (a store outlives controller upgrades)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pods)")}
        if "uid" not in columns:
            self._db.execute("ALTER TABLE pods ADD COLUMN uid TEXT")
        if "ip6" not in columns:  # dual stack: SQLite adds no UNIQUE column, so an index makes it one
            self._db.execute("ALTER TABLE pods ADD COLUMN ip6 TEXT")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS pods_ip6 ON pods (ip6)")
        if "vlan" not in columns:
            self._db.execute("ALTER TABLE pods ADD COLUMN vlan INTEGER")
        if "ip6" not in {row[1] for row in self._db.execute("PRAGMA table_info(nodes)")}:
            self._db.execute("ALTER TABLE nodes ADD COLUMN ip6 TEXT")

    def load(self) -> Snapshot:
        with self._lock:
            nodes = self._db.execute("SELECT name, mac, ip, dpid, port, ip6 FROM nodes ORDER BY name").fetchall()
            pods = self._db.execute(f"SELECT {_POD_COLUMNS} FROM pods ORDER BY created_at").fetchall()
            sticky = self._db.execute("SELECT key, ip FROM sticky").fetchall()
            sticky6 = self._db.execute("SELECT key, ip FROM sticky6").fetchall()
            released = self._db.execute("SELECT ip, at FROM released").fetchall()
        return Snapshot(
            nodes=tuple(Node(n, mac, ip, None if d is None else int(d, 16), p, ip6) for n, mac, ip, d, p, ip6 in nodes),
            pods=tuple(_pod(row) for row in pods),
            sticky=dict(sticky),
            released=dict(released),
            sticky6=dict(sticky6),
        )

    @contextmanager
    def transaction(self) -> Iterator[Writes]:
        with self._lock:
            if self._failed:
                raise StoreError(f"store {self.path}: refusing writes after a failed commit ({self._failed})")
            if not self._open:
                self._db.execute("BEGIN IMMEDIATE")
                self._open = True
            self._db.execute("SAVEPOINT block")
            try:
                yield _SqliteWrites(self._db)
            except BaseException:
                self._db.execute("ROLLBACK TO block")
                self._db.execute("RELEASE block")
                raise
            self._db.execute("RELEASE block")

    @property
    def failure(self) -> str | None:
        return None if self._failed is None else f"store {self.path}: a commit failed ({self._failed})"

    def sync(self) -> None:
        """Commit what is written. A caller that waited for the lock while another thread committed
        finds its blocks already durable and returns at once: that is the group commit."""
        with self._lock:
            if self._failed:
                raise StoreError(f"store {self.path}: a commit failed earlier ({self._failed})")
            if not self._open:
                return
            self._open = False
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._failed = str(err)
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"store {self.path}: commit failed, recent writes are lost: {err}") from err

    def close(self) -> None:
        if not self._failed:
            self.sync()
        with self._lock:
            self._db.close()


def _pod(row: tuple[object, ...]) -> Pod:
    values = dict(zip((f.name for f in fields(Pod)), row))
    values["mode"] = Mode(values["mode"])
    return Pod(**values)  # type: ignore[arg-type]


class _SqliteWrites:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def _run(self, sql: str, *args: object) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.IntegrityError as err:
            raise StoreError(f"store refused {sql.split()[0].lower()} {args!r}: {err}") from err

    def put_node(self, node: Node) -> None:
        dpid = None if node.dpid is None else f"{node.dpid:x}"
        self._run("INSERT OR REPLACE INTO nodes (name, mac, ip, dpid, port, ip6) VALUES (?, ?, ?, ?, ?, ?)",
                  node.name, node.mac, node.ip, dpid, node.port, node.ip6)

    def delete_node(self, name: str) -> None:
        self._run("DELETE FROM nodes WHERE name = ?", name)

    def put_pod(self, pod: Pod) -> None:
        """Upsert by (container_id, ifname); another pod's address is an error, never replaced."""
        values = [getattr(pod, name) for name in _POD_FIELDS]
        values = [value.value if isinstance(value, Mode) else value for value in values]
        self._run(_PUT_POD, *values)

    def delete_pod(self, container_id: str, ifname: str) -> None:
        self._run("DELETE FROM pods WHERE container_id = ? AND ifname = ?", container_id, ifname)

    def reserve(self, sticky: str, ip: str) -> None:
        table = "sticky6" if ":" in ip else "sticky"
        self._run(f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET ip = excluded.ip", sticky, ip)

    def unreserve(self, sticky: str) -> None:
        self._run("DELETE FROM sticky WHERE key = ?", sticky)
        self._run("DELETE FROM sticky6 WHERE key = ?", sticky)

    def mark_released(self, ip: str, at: float, *, reason: str | None = None) -> None:
        """The reason is the log's here (the collector logs it); a cluster store keeps it."""
        self._run("INSERT OR REPLACE INTO released VALUES (?, ?)", ip, at)
