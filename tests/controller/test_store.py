"""Both stores behind the `Store` protocol: the SQLite store on a real file and the Kubernetes store
on the session's real API server pass the same behavioural tests (writes, transactions, a reopen
that reloads everything); what only one of them has is tested on its own below, and the Kubernetes
store's own behaviour (races, conflicts, watches) in tests/controller/kube/test_store.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from controller.store import Mode, Node, SqliteStore, Store, StoreError
from ctlfakes import STORE_KINDS, break_commits, store_pod

NODE_NAMES = ("n1", "n2")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_reopen_reloads_everything(open_store: Callable[[], Store]) -> None:
    n1, n2 = NODE_NAMES
    store = open_store()
    with store.transaction() as tx:
        tx.put_node(Node(n1, "02:00:00:00:01:01", "198.18.0.11", dpid=2**64 - 1, port=7))
        tx.put_node(Node(n2, "02:00:00:00:01:02", "198.18.0.12"))
        tx.put_pod(store_pod("a", "198.18.0.100", sticky="default/web-0"))
        tx.put_pod(store_pod("b", "198.18.0.101", mode=Mode.IPVLAN, uid="5f0c7a4e-0000-4000-8000-000000000001"))
        tx.reserve("default/web-0", "198.18.0.100")
        tx.mark_released("198.18.0.150", 999.5, reason="pod default/x is gone")
    store.close()

    snapshot = open_store().load()
    assert snapshot.nodes == (
        Node(n1, "02:00:00:00:01:01", "198.18.0.11", dpid=2**64 - 1, port=7),
        Node(n2, "02:00:00:00:01:02", "198.18.0.12"),
    )
    assert snapshot.pods == (store_pod("a", "198.18.0.100", sticky="default/web-0"),
                             store_pod("b", "198.18.0.101", mode=Mode.IPVLAN, uid="5f0c7a4e-0000-4000-8000-000000000001"))
    assert snapshot.pods[0].created_at == 12.5
    assert snapshot.sticky == {"default/web-0": "198.18.0.100"}
    assert snapshot.released == {"198.18.0.150": 999.5}


def test_a_file_from_before_pod_uids_gets_the_column(store_path: Path) -> None:
    with closing(sqlite3.connect(store_path)) as old:  # the pods table as it was made before uids
        old.execute("CREATE TABLE pods (container_id TEXT NOT NULL, ifname TEXT NOT NULL, node TEXT NOT NULL, "
                    "namespace TEXT NOT NULL, name TEXT NOT NULL, pool TEXT NOT NULL, ip TEXT NOT NULL UNIQUE, "
                    "mac TEXT NOT NULL, mode TEXT NOT NULL, sticky TEXT, created_at REAL NOT NULL, "
                    "PRIMARY KEY (container_id, ifname))")
        old.execute("INSERT INTO pods VALUES ('a', 'eth0', 'n1', 'default', 'pod-a', 'default', '198.18.0.100', "
                    "'02:55:c6:12:00:05', 'macvlan', NULL, 12.5)")
        old.commit()
    store = SqliteStore(store_path)
    assert store.load().pods == (store_pod("a", "198.18.0.100"),)
    with store.transaction() as tx:
        tx.put_pod(store_pod("b", "198.18.0.101", uid="u-b"))
    store.close()
    assert [p.uid for p in SqliteStore(store_path).load().pods] == [None, "u-b"]


def test_a_failed_transaction_leaves_nothing(open_store: Callable[[], Store]) -> None:
    store = open_store()
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.put_pod(store_pod("a", "198.18.0.100"))
            tx.reserve("default/web-0", "198.18.0.100")
            raise RuntimeError("the switch said no")
    assert store.load().pods == ()
    assert store.load().sticky == {}
    assert open_store().load().pods == ()


def test_the_store_refuses_one_address_twice(open_store: Callable[[], Store]) -> None:
    store = open_store()
    with store.transaction() as tx:
        tx.put_pod(store_pod("a", "198.18.0.100"))
    with pytest.raises(StoreError, match="store refused"):
        with store.transaction() as tx:
            tx.put_pod(store_pod("b", "198.18.0.101"))
            tx.put_pod(store_pod("c", "198.18.0.100"))
    assert [p.container_id for p in store.load().pods] == ["a"]
    store.sync()
    assert [p.container_id for p in open_store().load().pods] == ["a"]


def test_updates_and_deletes(open_store: Callable[[], Store]) -> None:
    n1 = NODE_NAMES[0]
    store = open_store()
    with store.transaction() as tx:
        tx.put_node(Node(n1, "02:00:00:00:01:01", "198.18.0.11"))
        tx.put_pod(store_pod("a", "198.18.0.100"))
        tx.reserve("default/web-0", "198.18.0.100")
    with store.transaction() as tx:
        tx.put_node(Node(n1, "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4))
        tx.delete_pod("a", "eth0")
        tx.delete_pod("never", "eth0")
        tx.reserve("default/web-0", "198.18.0.120")
        tx.mark_released("198.18.0.100", 995.0)
        tx.mark_released("198.18.0.100", 996.0)
    snapshot = store.load()
    assert snapshot.nodes == (Node(n1, "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4),)
    assert snapshot.pods == ()
    assert snapshot.sticky == {"default/web-0": "198.18.0.120"}
    assert snapshot.released == {"198.18.0.100": 996.0}
    with store.transaction() as tx:
        tx.unreserve("default/web-0")
    assert store.load().sticky == {}
    store.sync()
    assert open_store().load().sticky == {}


# -- the SQLite store's own -------------------------------------------------------------------------


def test_file_is_in_wal_mode(store_path: Path) -> None:
    SqliteStore(store_path).close()
    assert sqlite3.connect(store_path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_blocks_are_durable_after_sync_and_concurrent_syncs_share_commits(store_path: Path) -> None:
    store = SqliteStore(store_path)
    with store.transaction() as tx:
        tx.put_pod(store_pod("a", "198.18.0.100"))
    other = sqlite3.connect(store_path)  # another reader: sees only what is committed
    assert other.execute("SELECT count(*) FROM pods").fetchone() == (0,)  # written, not committed
    store.sync()
    assert other.execute("SELECT count(*) FROM pods").fetchone() == (1,)

    commits = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    for cid, ip in (("b", "198.18.0.101"), ("c", "198.18.0.102")):
        with store.transaction() as tx:
            tx.put_pod(store_pod(cid, ip))
    store.sync()
    store.sync()  # what a second waiter does once the first committed both blocks: nothing
    assert commits == ["COMMIT"]

    def allocate(i: int) -> None:
        with store.transaction() as tx:
            tx.put_pod(store_pod(f"p{i}", f"198.18.1.{i}"))
        store.sync()
        with closing(sqlite3.connect(store_path)) as reader:  # its own: a shared one keeps old snapshots
            assert reader.execute("SELECT 1 FROM pods WHERE container_id = ?", (f"p{i}",)).fetchall() == [(1,)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(allocate, range(200)))
    assert other.execute("SELECT count(*) FROM pods").fetchone() == (203,)


def test_a_failed_commit_loses_the_uncommitted_blocks_and_refuses_writes(store_path: Path) -> None:
    """A COMMIT that fails (as with a full disk) leaves the store refusing writes: nothing after it
    could be trusted."""
    store = SqliteStore(store_path)
    with store.transaction() as tx:
        tx.put_pod(store_pod("a", "198.18.0.100"))
    store.sync()
    assert store.failure is None
    break_commits(store)
    with store.transaction() as tx:
        tx.put_pod(store_pod("b", "198.18.0.101"))
    with pytest.raises(StoreError, match="commit failed, recent writes are lost"):
        store.sync()
    assert store.failure == f"store {store_path}: a commit failed (FOREIGN KEY constraint failed)"
    with pytest.raises(StoreError, match="refusing writes after a failed commit"):
        with store.transaction():
            pass
    with pytest.raises(StoreError, match="a commit failed earlier"):
        store.sync()
    store.close()
    assert [p.container_id for p in SqliteStore(store_path).load().pods] == ["a"]
