"""controller/httpd.py on a real socket on 127.0.0.1: keep-alive, framing, limits, errors, shutdown, load."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from controller.httpd import HttpServer

Environ = dict[str, Any]
Serve = Callable[..., HttpServer]


def answer(start_response: Callable[..., Any], data: Environ, status: str = "200 OK") -> list[bytes]:
    payload = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def echo(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"] or 0))
    return answer(start_response, {"path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
                                   "body": body.decode(), "port": int(environ["REMOTE_PORT"])})  # fmt: skip


def lazy(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers without reading the body."""
    return answer(start_response, {"path": environ["PATH_INFO"]})


def boom(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    raise KeyError("secret internals")


def unsized(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"no ", b"length"])


def flood(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", str(64 * 1024 * 256))])
    return (b"x" * 64 * 1024 for _ in range(256))


def get(path: str = "/", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: t\r\n{extra}\r\n".encode()


def post(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class Raw:
    """A client socket that sends bytes as given and reads responses one at a time."""

    def __init__(self, server: HttpServer) -> None:
        self.sock = socket.create_connection(server.server_address, timeout=5)
        self.rfile = self.sock.makefile("rb")

    def send(self, data: bytes) -> Raw:
        self.sock.sendall(data)
        return self

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status = int(self.rfile.readline().split()[1])
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return status, headers, self.rfile.read(int(headers.get("content-length", 0)))

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def closed(self, within: float = 0.5) -> bool:
        """True if the server closes (a FIN, not a reset) within `within` seconds."""
        self.sock.settimeout(within)
        try:
            return self.rfile.read(1) == b""
        except TimeoutError:
            return False


class Ended(logging.Handler):
    """Counts the server's "connection ends" lines: a connection's thread is done with it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ended = threading.Semaphore(0)

    def emit(self, record: logging.LogRecord) -> None:
        if "connection ends" in record.getMessage():
            self.ended.release()


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[tuple[HttpServer, threading.Thread]] = []

    def start(app: Callable[..., Any] = echo, **options: Any) -> HttpServer:
        server = HttpServer(app, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(5)


def test_requests_share_one_connection(serve: Serve) -> None:
    connection = http.client.HTTPConnection(*serve().server_address, timeout=5)
    ports = []
    for index in range(5):
        connection.request("POST", f"/n?i={index}", body=b"hi")
        response = connection.getresponse()
        assert response.getheader("Connection") == "keep-alive"
        body = json.loads(response.read())
        assert (body["path"], body["query"], body["body"]) == ("/n", f"i={index}", "hi")
        ports.append(body["port"])
    assert ports == [connection.sock.getsockname()[1]] * 5  # a reconnect would show another port


def test_head_has_no_body_and_keeps_the_connection(serve: Serve) -> None:
    connection = http.client.HTTPConnection(*serve().server_address, timeout=5)
    connection.request("HEAD", "/h")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"") and int(response.getheader("Content-Length")) > 0
    connection.request("GET", "/g")
    assert json.loads(connection.getresponse().read())["port"] == connection.sock.getsockname()[1]


def test_a_response_without_content_length_ends_with_the_connection(serve: Serve) -> None:
    raw = Raw(serve(unsized)).send(get("/"))
    status, headers, _ = raw.response()
    assert (status, headers["connection"], raw.rfile.read()) == (200, "close", b"no length")


@pytest.mark.parametrize(("request_bytes", "kept"), [
    (get("/", "Connection: close\r\n"), False),
    (get("/", version="HTTP/1.0"), False),
    (get("/", "Connection: keep-alive\r\n", version="HTTP/1.0"), True),
])  # fmt: skip
def test_connection_close_and_http_10(serve: Serve, request_bytes: bytes, kept: bool) -> None:
    raw = Raw(serve()).send(request_bytes)
    status, headers, _ = raw.response()
    assert (status, headers["connection"]) == (200, "keep-alive" if kept else "close")
    if kept:
        assert raw.send(request_bytes).response()[0] == 200
    else:
        assert raw.closed()


def test_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    raw = Raw(serve()).send(get("/first") + post("/second", b"2nd") + get("/third"))
    answers = [json.loads(raw.response()[2]) for _ in range(3)]
    assert [(a["path"], a["body"]) for a in answers] == [("/first", ""), ("/second", "2nd"), ("/third", "")]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\r\nHost: t\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET nopath HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (get(version="HTTP/2.0"), 400),
    (get(version="HTTP/1.1x"), 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (get("/", "Host: u\r\n"), 400),
    (get("/", "No colon\r\n"), 400),
    (get("/", "Name : space before the colon\r\n"), 400),
    (get("/", "X-A: 1\r\n folded\r\n"), 400),
    (get("/", "Content-Length: -1\r\n"), 400),
    (get("/", "Content-Length: 12abc\r\n"), 400),
    (get("/", "Content-Length: 5\r\nContent-Length: 6\r\n"), 400),
    (get("/", "Transfer-Encoding: chunked\r\n"), 411),
    (get("/", "Transfer-Encoding: chunked, gzip\r\n"), 400),
    (get("/" + "a" * 8192), 414),
    (get("/", "X-Long: " + "a" * 8192 + "\r\n"), 431),
    (get("/", "".join(f"X-{i}: {i}\r\n" for i in range(100))), 431),  # with Host: 101 fields
])  # fmt: skip
def test_requests_the_server_cannot_take_are_answered_in_json_and_closed(
    serve: Serve, request_bytes: bytes, status: int
) -> None:
    raw = Raw(serve()).send(request_bytes)
    answered, headers, body = raw.response()
    assert (answered, headers["content-type"], headers["connection"]) == (status, "application/json", "close")
    assert set(json.loads(body)) == {"error"}
    assert raw.closed()


def test_the_limits_themselves_are_accepted(serve: Serve) -> None:
    line = get("/" + "a" * (8192 - len("GET / HTTP/1.1\r\n")))
    assert line.index(b"\n") + 1 == 8192
    fields = "".join(f"X-{i}: {i}\r\n" for i in range(99))
    assert Raw(serve()).send(line).response()[0] == 200
    assert Raw(serve()).send(get("/", fields)).response()[0] == 200


def test_an_unread_body_is_not_taken_for_the_next_request(serve: Serve) -> None:
    raw = Raw(serve(lazy)).send(post("/lazy", get("/smuggled")) + get("/next"))
    assert [json.loads(raw.response()[2])["path"] for _ in range(2)] == ["/lazy", "/next"]


def test_a_large_unread_body_closes_the_connection_cleanly(serve: Serve) -> None:
    raw = Raw(serve(lazy)).send(post("/lazy", b"x" * 100_000) + get("/next"))
    status, headers, _ = raw.response()
    assert (status, headers["connection"]) == (200, "close")
    assert raw.closed()


def test_expect_100_continue(serve: Serve) -> None:
    raw = Raw(serve()).send(b"PUT /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert raw.response()[0] == 100
    assert json.loads(raw.send(b"hello").response()[2])["body"] == "hello"


def test_an_application_error_is_500_json_logged_and_closed(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="underlay.http"):
        raw = Raw(serve(boom)).send(get("/x"))
        status, headers, body = raw.response()
        assert raw.closed()
    assert (status, headers["content-type"], json.loads(body)) == (500, "application/json", {"error": "internal error"})
    assert b"secret" not in body and b"Traceback" not in body
    assert [(r.name, r.levelno) for r in caplog.records] == [("underlay.http", logging.ERROR)]
    assert "secret internals" in caplog.text


def test_a_client_leaving_mid_request_or_mid_response_is_no_warning(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Ended()
    caplog.set_level(logging.DEBUG, logger="underlay.http")
    logging.getLogger("underlay.http").addHandler(handler)
    try:
        server = serve(flood)
        Raw(server).send(b"GET / HTTP/1.1\r\nHost: t\r\n").close()
        Raw(server).send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc").close()
        raw = Raw(server).send(get("/"))
        raw.rfile.read(1000)
        raw.close()
        assert all(handler.ended.acquire(timeout=5) for _ in range(3))
    finally:
        logging.getLogger("underlay.http").removeHandler(handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_idle_connection_is_closed_after_the_idle_timeout(serve: Serve) -> None:
    raw = Raw(serve(idle_timeout=0.2)).send(get("/"))
    assert raw.response()[0] == 200
    started = time.monotonic()
    assert raw.closed()
    assert 0.15 < time.monotonic() - started < 1.5


def test_a_connection_over_max_connections_gets_503_and_is_closed(serve: Serve) -> None:
    server = serve(max_connections=2)
    admitted = [Raw(server).send(get("/")) for _ in range(2)]
    assert [raw.response()[0] for raw in admitted] == [200, 200]
    refused = Raw(server).send(get("/"))
    status, headers, body = refused.response()
    assert (status, headers["connection"], set(json.loads(body))) == (503, "close", {"error"})
    assert refused.closed()
    assert admitted[0].send(get("/")).response()[0] == 200  # the admitted ones are still served


def test_shutdown_closes_idle_connections_and_ends_serve_forever() -> None:
    server = HttpServer(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    idle = Raw(server).send(get("/"))
    assert idle.response()[0] == 200
    started = time.monotonic()
    server.shutdown()
    thread.join(1)
    assert not thread.is_alive() and idle.closed(within=1)
    assert time.monotonic() - started < 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.server_address, timeout=1)


def test_shutdown_still_answers_a_request_in_progress(serve: Serve) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        entered.set()
        release.wait(5)
        return echo(environ, start_response)

    server = serve(slow)
    raw = Raw(server).send(get("/slow"))
    assert entered.wait(5)
    server.shutdown()
    release.set()
    assert raw.response()[0] == 200
    assert raw.closed()


def test_it_listens_only_where_told_and_a_taken_port_raises(serve: Serve) -> None:
    server = serve()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", server.server_address[1]), timeout=1)
    with pytest.raises(OSError):
        HttpServer(echo, *server.server_address)


def test_fifty_clients_twenty_requests_each(serve: Serve) -> None:
    server = serve()

    def client(number: int) -> tuple[int, list[Environ]]:
        connection = http.client.HTTPConnection(*server.server_address, timeout=10)
        answers = []
        for index in range(20):
            connection.request("POST", f"/c{number}", body=f"{number}:{index}".encode())
            answers.append(json.loads(connection.getresponse().read()))
        port = connection.sock.getsockname()[1]
        connection.close()
        return port, answers

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(client, range(50)))
    for number, (port, answers) in enumerate(results):
        assert [(a["path"], a["body"], a["port"]) for a in answers] == [
            (f"/c{number}", f"{number}:{index}", port) for index in range(20)]  # fmt: skip
