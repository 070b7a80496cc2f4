"""The SQLite store on a real file: writes, transactions, and a reopen that reloads everything."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.store import Mode, Node, Pod, SqliteStore, StoreError


def pod(cid: str, ip: str, **fields: object) -> Pod:
    values: dict[str, object] = dict(
        container_id=cid, ifname="eth0", node="n1", namespace="default", name=f"pod-{cid}", pool="default",
        ip=ip, mac="02:55:c6:12:00:05", mode=Mode.MACVLAN, sticky=None, created_at=12.5,
    )  # fmt: skip
    values.update(fields)
    return Pod(**values)  # type: ignore[arg-type]


def test_reopen_reloads_everything(store_path: Path) -> None:
    store = SqliteStore(store_path)
    with store.transaction() as tx:
        tx.put_node(Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=2**64 - 1, port=7))
        tx.put_node(Node("n2", "02:00:00:00:01:02", "198.18.0.12"))
        tx.put_pod(pod("a", "198.18.0.100", sticky="default/web-0"))
        tx.put_pod(pod("b", "198.18.0.101", mode=Mode.IPVLAN))
        tx.reserve("default/web-0", "198.18.0.100")
        tx.mark_released("198.18.0.150", 99.5)
    store.close()

    snapshot = SqliteStore(store_path).load()
    assert snapshot.nodes == (
        Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=2**64 - 1, port=7),
        Node("n2", "02:00:00:00:01:02", "198.18.0.12"),
    )
    assert snapshot.pods == (pod("a", "198.18.0.100", sticky="default/web-0"), pod("b", "198.18.0.101", mode=Mode.IPVLAN))
    assert snapshot.pods[0].created_at == 12.5
    assert snapshot.sticky == {"default/web-0": "198.18.0.100"}
    assert snapshot.released == {"198.18.0.150": 99.5}


def test_a_failed_transaction_leaves_nothing(store_path: Path) -> None:
    store = SqliteStore(store_path)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.put_pod(pod("a", "198.18.0.100"))
            tx.reserve("default/web-0", "198.18.0.100")
            raise RuntimeError("the switch said no")
    assert store.load().pods == ()
    assert store.load().sticky == {}


def test_the_database_refuses_one_address_twice(store_path: Path) -> None:
    store = SqliteStore(store_path)
    with store.transaction() as tx:
        tx.put_pod(pod("a", "198.18.0.100"))
    with pytest.raises(StoreError, match="store refused insert"):
        with store.transaction() as tx:
            tx.put_pod(pod("b", "198.18.0.101"))
            tx.put_pod(pod("c", "198.18.0.100"))
    assert [p.container_id for p in store.load().pods] == ["a"]


def test_updates_and_deletes(store_path: Path) -> None:
    store = SqliteStore(store_path)
    with store.transaction() as tx:
        tx.put_node(Node("n1", "02:00:00:00:01:01", "198.18.0.11"))
        tx.put_pod(pod("a", "198.18.0.100"))
        tx.reserve("default/web-0", "198.18.0.100")
    with store.transaction() as tx:
        tx.put_node(Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4))
        tx.delete_pod("a", "eth0")
        tx.delete_pod("never", "eth0")
        tx.reserve("default/web-0", "198.18.0.120")
        tx.mark_released("198.18.0.100", 5.0)
        tx.mark_released("198.18.0.100", 6.0)
    snapshot = store.load()
    assert snapshot.nodes == (Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4),)
    assert snapshot.pods == ()
    assert snapshot.sticky == {"default/web-0": "198.18.0.120"}
    assert snapshot.released == {"198.18.0.100": 6.0}
    with store.transaction() as tx:
        tx.unreserve("default/web-0")
    assert store.load().sticky == {}


def test_file_is_in_wal_mode(store_path: Path) -> None:
    SqliteStore(store_path).close()
    assert sqlite3.connect(store_path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
