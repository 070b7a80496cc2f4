"""The SQLite store keeps a pod's VLAN, and a file from before VLAN pools gains the column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.store import Mode, Pod, SqliteStore

POD = Pod("c1", "eth0", "n1", "blue", "web-0", "blue", "198.18.6.100", "02:55:c6:12:06:64", Mode.MACVLAN,
          created_at=1.0, vlan=100)


def test_a_pods_vlan_survives_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    with store.transaction() as tx:
        tx.put_pod(POD)
    store.close()
    assert SqliteStore(tmp_path / "s.sqlite").load().pods == (POD,)


def test_a_file_from_before_vlan_pools_loads_its_pods_untagged(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE pods (container_id TEXT NOT NULL, ifname TEXT NOT NULL, node TEXT NOT NULL,
            namespace TEXT NOT NULL, name TEXT NOT NULL, pool TEXT NOT NULL, ip TEXT NOT NULL UNIQUE,
            mac TEXT NOT NULL, mode TEXT NOT NULL, sticky TEXT, created_at REAL NOT NULL, uid TEXT, ip6 TEXT,
            PRIMARY KEY (container_id, ifname));
        INSERT INTO pods VALUES ('c0', 'eth0', 'n1', 'default', 'old', 'default', '198.18.0.5',
            '02:55:c6:12:00:05', 'macvlan', NULL, 1.0, NULL, NULL);
    """)
    db.commit()
    db.close()
    (pod,) = SqliteStore(path).load().pods
    assert (pod.ip, pod.vlan) == ("198.18.0.5", None)
