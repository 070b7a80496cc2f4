"""Fixtures for the attack tests: the controller's REST API on a real HTTP server, and the CNI
plugin and agent of tests/node_agent/underlay_testbed.

The API is served as tests/controller/test_rest_api.py serves it (the controller's HTTP server on
127.0.0.1, a real Service on a SQLite file, the switch side recorded by ctlfakes.RecordingFabric):
an attacker here is a hostile HTTP client, and the store is what must not change when it is refused.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "controller"), str(TESTS / "node_agent")]

from ctlfakes import TOKENS, Clock, RecordingFabric, make_config  # noqa: E402
from underlay_testbed import cni_bin, make_node, pods  # noqa: E402, F401

from controller.api import Api  # noqa: E402
from controller.httpd import HttpServer  # noqa: E402
from controller.service import Service  # noqa: E402
from controller.store import SqliteStore  # noqa: E402

NODE1 = {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11"}


@dataclass
class RestTarget:
    port: int
    service: Service
    store: SqliteStore
    tokens: dict[str, str]
    clock: Clock


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestTarget]:
    """A controller with node n1 registered and located (switch 1, port 4), as an agent leaves it."""
    store, clock = SqliteStore(tmp_path_factory.mktemp("rest") / "store.sqlite"), Clock()
    service = Service(store, make_config(), now=clock, fabric=RecordingFabric())
    service.register_node("n1", mac=NODE1["mac"], ip=NODE1["ip"])
    service.node_located(NODE1["mac"], dpid=1, port=4)
    server = HttpServer(Api(service, tokens=TOKENS), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RestTarget(server.server_address[1], service, store, dict(TOKENS), clock)
    finally:
        server.shutdown()
        store.close()
