"""The lab's state file under concurrent writers: separate processes, as concurrent `underlay-lab`
commands are, each doing read-modify-write; none may lose another's change."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from deploy.lab import statefile


def append_many(path: Path, lock: Path, who: int, times: int) -> None:
    for index in range(times):
        with statefile.locked(lock):
            items = json.loads(path.read_text())
            items.append(f"{who}-{index}")
            statefile.write_atomically(path, items)


def test_concurrent_read_modify_writes_keep_every_change(tmp_path: Path) -> None:
    path, lock = tmp_path / "state.json", tmp_path / "state.lock"
    statefile.write_atomically(path, [])
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=append_many, args=(path, lock, who, 25)) for who in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert [worker.exitcode for worker in workers] == [0] * 20
    assert sorted(json.loads(path.read_text())) == sorted(f"{w}-{i}" for w in range(20) for i in range(25))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [], "no temporary file left"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    statefile.write_atomically(path, {"pods": ["a"]})

    try:
        statefile.write_atomically(path, {"pods": [object()]})  # not JSON: fails mid-way
    except TypeError:
        pass

    assert json.loads(path.read_text()) == {"pods": ["a"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
