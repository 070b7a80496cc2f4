"""Fixtures for the controller's unit tests (builders and doubles live in ctlfakes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlfakes import TOKENS, Clock, RecordingFabric, make_config
from kubeenv import ensure_node, kube, kube_as, kube_clean  # noqa: F401  (fixtures on the session's API server)

from controller.config import Config
from controller.kube.store import KubeStore
from controller.service import Service
from controller.store import SqliteStore, Store


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
def store_kind() -> str:
    """Which store the service tests run on; modules whose tests hold for both override this
    fixture with one parametrised over ctlfakes.STORE_KINDS."""
    return "sqlite"


@pytest.fixture
def open_store(request: pytest.FixtureRequest, store_kind: str, store_path: Path, clock: Clock) -> Iterator[Callable[[], Store]]:
    """Factory: the test's store (a SQLite file, or the session's API server with the Node objects
    of make_config's nodes); call again to reopen it, as a restarted controller does."""
    opened: list[Store] = []
    api = request.getfixturevalue("kube_clean") if store_kind == "kubernetes" else None
    if api is not None:
        for name in TOKENS:
            ensure_node(api, name)

    def make() -> Store:
        store: Store = SqliteStore(store_path) if api is None else KubeStore(api, now=clock, cooldown=30)
        opened.append(store)
        return store

    yield make
    for store in opened:  # a failed store too: else its background thread retries (and logs) into later tests
        store.close()


@pytest.fixture
def make_service(open_store: Callable[[], Store], clock: Clock, fabric: RecordingFabric) -> Callable[..., Service]:
    """Factory: a Service on the test's store; call again to 'restart' on the same store."""

    def make(config: Config | None = None, **kwargs: Any) -> Service:
        return Service(open_store(), config or make_config(), now=clock, fabric=fabric, **kwargs)

    return make


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()
