"""A real HTTP(S) server (the controller's own, controller/httpd.py) that answers every request with
a health answer and records each request's headers: what the agent's client sent, seen from outside."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from controller.httpd import HttpServer


@contextmanager
def health_server(*, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """(port, the headers of each request so far) of a server on 127.0.0.1."""
    seen: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append({key[5:]: value for key, value in environ.items() if key.startswith("HTTP_")})
        body = b'{"status": "ok", "epoch": "e1"}'
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    server = HttpServer(app, "127.0.0.1", 0, tls=tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
