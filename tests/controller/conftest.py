"""Fixtures for the controller's unit tests (builders and doubles live in ctlfakes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlfakes import Clock, RecordingFabric, make_config

from controller.config import Config
from controller.service import Service
from controller.store import SqliteStore


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fabric() -> RecordingFabric:
    return RecordingFabric()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def make_service(store_path: Path, clock: Clock, fabric: RecordingFabric) -> Iterator[Callable[..., Service]]:
    """Factory: a Service on the test's SQLite file; call again to 'restart' on the same file."""
    stores: list[SqliteStore] = []

    def make(config: Config | None = None, **kwargs: Any) -> Service:
        store = SqliteStore(store_path)
        stores.append(store)
        return Service(store, config or make_config(), now=clock, fabric=fabric, **kwargs)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()
