"""controller/httpd.py on a real socket on 127.0.0.1: keep-alive, framing, limits, deadlines, the
body read only by the application, errors, TLS, shutdown, load."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.config import ApiLimits
from controller.httpd import HttpServer, tls_context
from deploy.lab.pki import Authority

Environ = dict[str, Any]
Serve = Callable[..., HttpServer]
FAST = ApiLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5)


def answer(start_response: Callable[..., Any], data: Environ, status: str = "200 OK") -> list[bytes]:
    payload = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def echo(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    return answer(start_response, {"path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
                                   "body": body.decode(), "port": int(environ["REMOTE_PORT"]),
                                   "scheme": environ["wsgi.url_scheme"]})  # fmt: skip


def lazy(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers without reading the body, as the API does a request without a valid token."""
    return answer(start_response, {"error": "missing or invalid bearer token"}, "401 Unauthorized")


def boom(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    raise KeyError("secret internals")


def unsized(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"no ", b"length"])


def get(path: str = "/", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: t\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Raw:
    """A client socket that sends bytes as given and reads responses one at a time."""

    def __init__(self, server: HttpServer, *, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(server.server_address, timeout=5, source_address=(source, 0))
        self.sock = tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock
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

    def closed(self, within: float = 1.0) -> bool:
        """True if the server closes (a FIN, not a reset) within `within` seconds."""
        self.sock.settimeout(within)
        try:
            return self.rfile.read(1) == b""
        except TimeoutError:
            return False


def wait_for(probe: Callable[[], bool], *, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path]:
    directory = tmp_path_factory.mktemp("pki")
    return Authority.create(directory), directory


# -- keep-alive and framing -------------------------------------------------------------------

def test_requests_share_one_connection(serve: Serve) -> None:
    connection = http.client.HTTPConnection(*serve().server_address, timeout=5)
    ports = []
    for index in range(5):
        connection.request("POST", f"/n?i={index}", body=b"hi")
        body = json.loads(connection.getresponse().read())
        assert (body["path"], body["query"], body["body"], body["scheme"]) == ("/n", f"i={index}", "hi", "http")
        ports.append(body["port"])
    assert ports == [connection.sock.getsockname()[1]] * 5  # a reconnect would show another port


def test_head_has_no_body_and_keeps_the_connection(serve: Serve) -> None:
    connection = http.client.HTTPConnection(*serve().server_address, timeout=5)
    connection.request("HEAD", "/h")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"") and int(response.getheader("Content-Length")) > 0
    connection.request("GET", "/g")
    assert json.loads(connection.getresponse().read())["port"] == connection.sock.getsockname()[1]


def test_a_response_without_content_length_is_chunked(serve: Serve) -> None:
    connection = http.client.HTTPConnection(*serve(unsized).server_address, timeout=5)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert (response.getheader("Transfer-Encoding"), response.read()) == ("chunked", b"no length")


@pytest.mark.parametrize(("request_bytes", "kept"), [
    (get("/", "Connection: close\r\n"), False),
    (get("/", version="HTTP/1.0"), False),
    (get("/", "Connection: keep-alive\r\n", version="HTTP/1.0"), True),
])  # fmt: skip
def test_connection_close_and_http_10(serve: Serve, request_bytes: bytes, kept: bool) -> None:
    raw = Raw(serve()).send(request_bytes)
    assert raw.response()[0] == 200
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
    (get(version="HTTP/2.0"), 505),
    (get(version="HTTP/1.1x"), 400),
    (get("/", "Host: u\r\n"), 400),
    (get("/", "No colon\r\n"), 400),
    (get("/", "Name : space before the colon\r\n"), 400),
    (get("/", "X-A: 1\r\n folded\r\n"), 400),
    (get("/", "Content-Length: -1\r\n"), 400),
    (get("/", "Content-Length: 12abc\r\n"), 400),
    (get("/", "Content-Length: 5\r\nContent-Length: 5\r\n"), 400),
    (get("/", "Transfer-Encoding: chunked\r\n"), 411),
    (get("/", "Transfer-Encoding: chunked, gzip\r\n"), 400),
    (get("/", "Content-Length: 2000000\r\n"), 413),
    (get("/" + "a" * 8192), 414),
    (get("/", "X-Long: " + "a" * 16384 + "\r\n"), 431),
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
    server = serve()
    assert Raw(server).send(line).response()[0] == 200
    assert Raw(server).send(get("/", fields)).response()[0] == 200
    assert Raw(server).send(post("/", b"x" * (1 << 20))).response()[0] == 200


# -- the body: read by the application only ---------------------------------------------------

def test_a_body_the_application_does_not_read_is_not_awaited_and_closes_the_connection(serve: Serve) -> None:
    """The API answers a request without a valid token without reading its body: the answer must
    not wait for a body that never comes, and the rest of the stream is never taken for a request."""
    raw = Raw(serve(lazy)).send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + get("/smuggled"))
    status, headers, _ = raw.response()
    assert (status, headers["connection"]) == (401, "close")
    assert raw.closed()


def test_expect_100_continue_is_answered_when_the_application_reads(serve: Serve) -> None:
    expect = b"PUT /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    raw = Raw(serve()).send(expect)
    assert raw.response()[0] == 100
    assert json.loads(raw.send(b"hello").response()[2])["body"] == "hello"
    refused = Raw(serve(lazy)).send(expect)
    assert refused.response()[0] == 401  # no 100 first: the client never sends its body


def test_a_body_that_does_not_arrive_in_time_is_408(serve: Serve) -> None:
    raw = Raw(serve(limits=FAST)).send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    status, headers, body = raw.response()
    assert (status, headers["connection"]) == (408, "close")
    assert raw.closed()


# -- heads: read without a thread, within a deadline ------------------------------------------

def test_slow_and_silent_clients_hold_no_thread(serve: Serve) -> None:
    """One pool thread; clients that send nothing, half a head or a head byte by byte do not keep
    it from another client."""
    server = serve(limits=replace(FAST, threads=1, header_timeout=30))
    silent = [Raw(server) for _ in range(20)]
    partial = [Raw(server).send(b"GET / HTTP/1.1\r\nHost:") for _ in range(20)]
    assert Raw(server).send(get("/served")).response()[0] == 200
    for raw in silent + partial:
        raw.close()


def test_a_head_that_does_not_arrive_in_time_is_408_and_a_silent_connection_closed(serve: Serve) -> None:
    server = serve(limits=FAST)
    partial, silent = Raw(server).send(b"GET / HTTP/1.1\r\nHo"), Raw(server)
    started = time.monotonic()
    assert partial.response()[0] == 408
    assert partial.closed() and silent.closed()
    assert time.monotonic() - started < 3


def test_an_idle_connection_is_closed_after_the_idle_timeout(serve: Serve) -> None:
    raw = Raw(serve(limits=replace(FAST, idle_timeout=0.3))).send(get("/"))
    assert raw.response()[0] == 200
    started = time.monotonic()
    assert raw.closed(within=3)
    assert 0.2 < time.monotonic() - started < 3


# -- connection limits ------------------------------------------------------------------------

def test_connections_over_the_per_peer_limit_are_refused_at_accept_and_others_still_served(serve: Serve) -> None:
    server = serve(limits=replace(FAST, max_connections_per_peer=3, header_timeout=30))
    admitted = [Raw(server, source="127.0.0.2") for _ in range(3)]
    wait_for(lambda: server.gate.open == 3)
    assert_refused(Raw(server, source="127.0.0.2"))
    assert Raw(server, source="127.0.0.3").send(get("/")).response()[0] == 200  # another peer
    assert admitted[0].send(get("/")).response()[0] == 200  # the admitted ones are still served


def test_connections_over_the_total_limit_are_refused(serve: Serve) -> None:
    server = serve(limits=replace(FAST, max_connections=4, header_timeout=30))
    admitted = [Raw(server, source=f"127.0.0.{2 + index}") for index in range(4)]
    wait_for(lambda: server.gate.open == 4)
    assert_refused(Raw(server, source="127.0.0.9"))
    admitted[0].close()
    wait_for(lambda: server.gate.open == 3)
    assert Raw(server, source="127.0.0.9").send(get("/")).response()[0] == 200


def assert_refused(raw: Raw) -> None:
    """Answered 503 and closed; or, when the request reached the server after its close, reset."""
    try:
        status, headers, body = raw.send(get("/")).response()
    except (ConnectionResetError, BrokenPipeError):
        return
    assert (status, headers["connection"], set(json.loads(body))) == (503, "close", {"error"})
    assert raw.closed()


# -- errors -----------------------------------------------------------------------------------

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
    def flood(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(64 * 1024 * 256))])
        return (b"x" * 64 * 1024 for _ in range(256))

    caplog.set_level(logging.DEBUG, logger="underlay.http")
    server = serve(flood)
    Raw(server).send(b"GET / HTTP/1.1\r\nHost: t\r\n").close()
    Raw(server).send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc").close()
    raw = Raw(server).send(get("/"))
    raw.rfile.read(1000)
    raw.close()
    wait_for(lambda: server.gate.open == 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- TLS --------------------------------------------------------------------------------------

def test_tls_serves_and_checks_client_certificates(serve: Serve, authority: tuple[Authority, Path]) -> None:
    ca, directory = authority
    cert, key = ca.issue(directory, "api", ip="127.0.0.1")
    client_cert, client_key = ca.issue(directory, "agent", client=True)
    server = serve(tls=tls_context(cert=str(cert), key=str(key), client_ca=str(ca.path)))
    trusting = ssl.create_default_context(cafile=str(ca.path))
    with pytest.raises(ssl.SSLError):  # no client certificate
        Raw(server, tls=trusting).send(get("/")).response()
    trusting.load_cert_chain(client_cert, client_key)
    raw = Raw(server, tls=trusting).send(get("/a") + get("/b"))
    assert [json.loads(raw.response()[2])["scheme"] for _ in range(2)] == ["https", "https"]


def test_plain_http_into_the_tls_port_is_told_to_use_https(serve: Serve, authority: tuple[Authority, Path]) -> None:
    ca, directory = authority
    cert, key = ca.issue(directory, "api2", ip="127.0.0.1")
    raw = Raw(serve(tls=tls_context(cert=str(cert), key=str(key)))).send(get("/"))
    status, _, body = raw.response()
    assert (status, json.loads(body)) == (400, {"error": "this port speaks TLS: use https://"})


# -- shutdown, listening, load ----------------------------------------------------------------

def test_shutdown_closes_idle_connections_and_ends_serve_forever() -> None:
    server = HttpServer(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    idle = Raw(server).send(get("/"))
    assert idle.response()[0] == 200
    started = time.monotonic()
    server.shutdown()
    thread.join(2)
    assert not thread.is_alive() and idle.closed(within=1)
    assert time.monotonic() - started < 2
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.server_address, timeout=1)


def test_shutdown_waits_for_a_request_in_progress_to_be_answered(serve: Serve) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        entered.set()
        release.wait(5)
        return echo(environ, start_response)

    server = serve(slow)
    raw = Raw(server).send(get("/slow"))
    assert entered.wait(5)
    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    release.set()
    status, headers, _ = raw.response()
    assert (status, headers["connection"]) == (200, "close")
    stopping.join(5)
    assert not stopping.is_alive()


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
