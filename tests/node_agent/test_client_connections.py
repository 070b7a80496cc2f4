"""The client's keep-alive connections, against the controller's own HTTP server on loopback:
short-lived threads (one per CNI call) share them, and one the server closed is replaced."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import ApiLimits
from controller.httpd import HttpServer, tls_context
from deploy.lab.pki import server_files
from node_agent.controller_client import ControllerClient


class PeerPorts:
    """A WSGI app answering every request with the epoch, remembering the client ports it saw."""

    def __init__(self) -> None:
        self.ports: list[str] = []

    def __call__(self, environ, start_response):  # noqa: ANN001, ANN204
        self.ports.append(environ["REMOTE_PORT"])
        body = json.dumps({"status": "ok", "epoch": "e1"}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture(params=["https", "http"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[PeerPorts, ControllerClient]]:
    """Over TLS (as agents talk to the controller) and plain HTTP (allowed on loopback)."""
    app, tls, ca_file = PeerPorts(), None, None
    if request.param == "https":
        files = server_files(tmp_path, ip="127.0.0.1")
        tls, ca_file = tls_context(cert=str(files.cert), key=str(files.key)), str(files.ca)
    server = HttpServer(app, "127.0.0.1", 0, limits=ApiLimits(idle_timeout=0.3), tls=tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield app, ControllerClient(f"{request.param}://127.0.0.1:{server.server_address[1]}", "n1", token="t",
                                    ca_file=ca_file, timeout=5)
    finally:
        server.shutdown()


def test_short_lived_threads_share_one_connection(served: tuple[PeerPorts, ControllerClient]) -> None:
    app, client = served
    for _ in range(10):
        thread = threading.Thread(target=client.health)
        thread.start()
        thread.join()
    assert len(app.ports) == 10 and len(set(app.ports)) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(served: tuple[PeerPorts, ControllerClient]) -> None:
    app, client = served
    client.health()
    time.sleep(0.6)  # past the server's idle timeout: it closed the connection
    assert client.health()["status"] == "ok"
    assert len(app.ports) == 2 and app.ports[0] != app.ports[1]
