"""HTTP/1.1 with persistent connections for one WSGI application: the agents' REST API.

Why not wsgiref: it speaks HTTP/1.0, closes every connection and parses header fields with
email.parser; profiling put ~35% of the controller's CPU per pod placement there. Node agents keep
a few http.client connections open and share them, so a persistent connection saves them a TCP
handshake and us a thread start per request.

One thread per connection, at most `max_connections` at once (one more is answered 503 and
closed), each closed after `idle_timeout` seconds without a request. Requests are parsed by hand
from a buffered reader, within limits (8 KiB lines, 100 header fields). Bodies come only with
Content-Length; those up to 64 KiB are read before the application runs, so whatever it leaves
unread cannot be taken for the next request. A request that cannot be framed is answered and its
connection closed. The server's own answers are JSON `{"error": ...}` like the API's; an
application error is logged and answered 500, never with its traceback.
"""

from __future__ import annotations

import io
import json
import logging
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, BinaryIO
from urllib.parse import unquote_to_bytes

LOG = logging.getLogger("underlay.http")
MAX_LINE = 8192  # request line and each header line, CRLF included
MAX_FIELDS = 100
BUFFERED_BODY = 64 * 1024  # read before the app runs; a larger body is streamed and its connection closed after
BACKLOG = 256  # a node's burst of pod ADDs must queue, not be reset
LINGER = 1.0  # seconds to wait for the client's close after ours

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"(?:https?://[!-.0-~]*)?(/[!-~]*)", re.IGNORECASE)  # origin- or absolute-form (RFC 9112 §3.2)
VERSION = re.compile(rb"HTTP/1\.[0-9]")  # 1.2 and later minors are served as 1.1 (RFC 9112 §2.3)
LENGTH = re.compile(r"[0-9]{1,18}")

StartResponse = Callable[..., Callable[[bytes], None]]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BadMessage(Exception):
    """A request the server answers itself with `status`, then closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class ClientGone(Exception):
    """The client closed, reset or stalled: nothing to answer, nothing worth more than a debug line."""


@dataclass(frozen=True)
class Head:
    method: str
    path: bytes  # still percent-encoded
    query: bytes
    version: str
    fields: dict[str, str]  # lower-case name -> value; repeated fields joined by ", "
    length: int
    keep_alive: bool


def read_head(rfile: BinaryIO) -> Head | None:
    """The next request's line and header fields; None if the client closed between requests."""
    line = rfile.readline(MAX_LINE + 1)
    if line in (b"\r\n", b"\n"):  # RFC 9112 §2.2: at least one empty line before a request is ignored
        line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    parts = _line(line, 414, "request line").split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not VERSION.fullmatch(parts[2]):
        raise BadMessage(400, "malformed request line")
    target = TARGET.fullmatch(parts[1])
    if target is None:
        raise BadMessage(400, "request target: not a path")
    version = parts[2].decode()
    fields = _fields(rfile)
    if version != "HTTP/1.0" and "host" not in fields:
        raise BadMessage(400, "Host: missing")  # RFC 9112 §3.2: a MUST
    connection = {token.strip().lower() for token in fields.get("connection", "").split(",")}
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    path, _, query = target.group(1).partition(b"?")
    return Head(parts[0].decode(), path, query, version, fields, _body_length(fields), keep_alive)


def _line(raw: bytes, status: int, what: str) -> bytes:
    if len(raw) > MAX_LINE:
        raise BadMessage(status, f"{what} longer than {MAX_LINE} bytes")
    if not raw.endswith(b"\n"):
        raise ClientGone("closed in the middle of a request")
    return raw.rstrip(b"\r\n")


def _fields(rfile: BinaryIO) -> dict[str, str]:
    fields: dict[str, str] = {}
    for _ in range(MAX_FIELDS + 1):
        line = _line(rfile.readline(MAX_LINE + 1), 431, "header line")
        if not line:
            return fields
        name, colon, value = line.partition(b":")
        # A name must be a token: this also refuses space before the colon and obs-fold (RFC 9112 §5)
        if not colon or not TOKEN.fullmatch(name) or b"\r" in value or b"\0" in value:
            raise BadMessage(400, "malformed header line")
        key, text = name.decode().lower(), value.strip(b" \t").decode("latin-1")
        if key == "host" and key in fields:
            raise BadMessage(400, "Host: more than one")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text
    raise BadMessage(431, f"more than {MAX_FIELDS} header fields")


def _body_length(fields: dict[str, str]) -> int:
    coding = fields.get("transfer-encoding")
    if coding is not None:
        if coding.rpartition(",")[2].strip().lower() != "chunked":
            raise BadMessage(400, "Transfer-Encoding: the body length cannot be known")  # RFC 9112 §6.3: a MUST
        # We do not read chunked bodies (our agents send Content-Length). RFC 9112 §6.3 lets a server
        # refuse a body without Content-Length with 411, which names the fix; its 501 (§6.1) is for a
        # coding the server does not know, and chunked is one every HTTP/1.1 server must know.
        raise BadMessage(411, "Transfer-Encoding is not supported: send Content-Length")
    values = {value.strip() for value in fields.get("content-length", "0").split(",")}
    if len(values) != 1 or not LENGTH.fullmatch(value := values.pop()):
        raise BadMessage(400, "Content-Length: not one non-negative integer")
    return int(value)


class Body:
    """wsgi.input for a streamed body: reads stop at Content-Length, so none reaches the next request."""

    def __init__(self, source: BinaryIO, length: int) -> None:
        self._source, self.remaining = source, length

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._wanted(size)
        data = self._take(self._source.read, wanted)
        if len(data) < wanted:
            raise ClientGone("closed in the middle of a request body")
        return data

    def readline(self, size: int | None = -1) -> bytes:
        wanted = self._wanted(size)
        data = self._take(self._source.readline, wanted)
        if wanted and not data:
            raise ClientGone("closed in the middle of a request body")
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _wanted(self, size: int | None) -> int:
        return self.remaining if size is None or size < 0 else min(size, self.remaining)

    def _take(self, read: Callable[[int], bytes], wanted: int) -> bytes:
        if not wanted:
            return b""
        try:
            data = read(wanted)
        except OSError as err:  # idle timeout or reset while the body trickles in
            raise ClientGone(str(err)) from err
        self.remaining -= len(data)
        return data


class Response:
    """start_response and write() of one exchange; the head leaves with the first body bytes."""

    def __init__(self, conn: socket.socket, *, keep_alive: bool, send_body: bool) -> None:
        self.conn = conn
        self.keep_alive = keep_alive
        self.send_body = send_body  # not for HEAD
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None
        self.head_sent = False
        self.sent = 0

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: no cycle through the traceback
        elif self.status:
            raise RuntimeError("start_response called twice without exc_info")
        self.status, self.headers, self.length = status, [], None
        for name, value in headers:
            key = name.lower()
            if key == "content-length":
                self.length = int(value) if LENGTH.fullmatch(value) else None
            if key == "connection":  # ours to say; the app may only ask for close
                self.keep_alive = self.keep_alive and "close" not in value.lower()
            else:
                self.headers.append((name, value))
        return self.write

    def write(self, data: bytes) -> None:
        if not self.status:
            raise RuntimeError("the application wrote before start_response")
        if not self.send_body:
            data = b""
        elif self.length is not None:
            data = data[: self.length - self.sent]  # more than announced would be read as the next response
        if self.head_sent and not data:
            return
        try:
            self.conn.sendall(data if self.head_sent else self._head() + data)
        except OSError as err:
            raise ClientGone(str(err)) from err
        self.head_sent = True
        self.sent += len(data)

    def finish(self) -> bool:
        """Send the head if no body bytes did; True if the connection may carry another request."""
        if not self.head_sent:
            self.write(b"")
        return self.keep_alive and (not self.send_body or self.sent == self.length)

    def _head(self) -> bytes:
        if self.send_body and self.length is None:
            self.keep_alive = False  # the end of the body is where the connection ends
        lines = [f"HTTP/1.1 {self.status}", f"Date: {formatdate(usegmt=True)}",
                 *(f"{name}: {value}" for name, value in self.headers),
                 "Connection: keep-alive" if self.keep_alive else "Connection: close"]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_error(conn: socket.socket, status: int, reason: str) -> None:
    """The server's own answer, JSON like the API's, announcing the close that follows."""
    body = json.dumps({"error": reason}).encode()
    response = Response(conn, keep_alive=False, send_body=True)
    response.start_response(f"{status} {HTTPStatus(status).phrase}",
                            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    response.write(body)


def close(conn: socket.socket) -> None:
    """Half-close, read until the client closes too, then close (RFC 9112 §9.6): closing with input
    unread resets the connection, and the reset can destroy a response the client has not read."""
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(65536):
                break
    except OSError:
        pass  # timed out, reset or already shut: closing is all that is left
    finally:
        conn.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait out TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "::" is not also every IPv4 address
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)  # accept() after a select must not block on a client that left
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves `app` on host:port from serve_forever() until shutdown(). It binds here, so a taken
    address raises OSError before any thread starts."""

    def __init__(self, app: WsgiApp, host: str, port: int, *, max_connections: int = 256,
                 idle_timeout: float = 30.0) -> None:  # fmt: skip
        self.app = app
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._listener = _listen(host, port)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._base = {"SCRIPT_NAME": "", "SERVER_NAME": host, "SERVER_PORT": str(self.server_address[1]),
                      "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                      "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}  # fmt: skip
        self._wake_in, self._wake_out = socket.socketpair()  # shutdown() wakes the accept loop through it
        self._lock = threading.Lock()  # guards the three below
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._serving = False
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._serving = True
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_in, selectors.EVENT_READ)
                while not self._stopping:
                    if any(key.fileobj is self._listener for key, _ in selector.select()):
                        self._accept()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting and close every connection now; a request in progress is still answered."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RD)  # wakes a thread waiting for a request; sending still works
                except OSError:
                    pass
            serving = self._serving
        self._wake_out.send(b"\0")
        if serving:
            self._stopped.wait()
        for sock in (self._listener, self._wake_in, self._wake_out):
            sock.close()

    def _accept(self) -> None:
        try:
            conn, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as err:  # out of file descriptors: back off rather than spin on a ready listener
            LOG.warning("REST API: cannot accept a connection: %s", err)
            time.sleep(0.1)
            return
        with self._lock:
            if self._stopping:
                conn.close()
                return
            admitted = len(self._connections) < self.max_connections
            if admitted:
                self._connections.add(conn)
        serve = self._serve if admitted else self._refuse
        threading.Thread(target=serve, args=(conn, peer), name=f"http {peer[0]}:{peer[1]}", daemon=True).start()

    def _refuse(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        LOG.warning("REST API: refused %s:%d: %d connections are open", peer[0], peer[1], self.max_connections)
        try:
            conn.settimeout(LINGER)
            send_error(conn, 503, f"more than {self.max_connections} connections open, try again")
        except (ClientGone, OSError):
            pass
        close(conn)

    def _serve(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a multi-part body must not wait for ACKs
            conn.settimeout(self.idle_timeout)
            with conn.makefile("rb") as rfile:
                while not self._stopping and self._exchange(conn, rfile, peer):
                    pass
        except (ClientGone, OSError) as err:  # the idle timeout too
            LOG.debug("%s:%d: connection ends: %r", peer[0], peer[1], err)
        finally:
            close(conn)
            with self._lock:
                self._connections.discard(conn)

    def _exchange(self, conn: socket.socket, rfile: BinaryIO, peer: tuple[Any, ...]) -> bool:
        """Serve one request; True if the connection stays open for the next."""
        try:
            head = read_head(rfile)
        except BadMessage as err:
            LOG.debug("%s:%d: %d %s", peer[0], peer[1], err.status, err.reason)
            send_error(conn, err.status, err.reason)
            return False
        if head is None:
            return False
        if head.length and head.version != "HTTP/1.0" and head.fields.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        buffered = head.length <= BUFFERED_BODY
        body = Body(rfile, head.length)
        environ = self._environ(head, io.BytesIO(body.read()) if buffered else body, peer)
        response = Response(conn, keep_alive=head.keep_alive and buffered and not self._stopping,
                            send_body=head.method != "HEAD")  # fmt: skip
        try:
            reusable = self._run(environ, response)
        except ClientGone:
            raise
        except Exception:
            LOG.exception("%s %s from %s: the application failed", head.method, environ["PATH_INFO"], peer[0])
            if not response.head_sent:
                send_error(conn, 500, "internal error")
            return False
        LOG.debug("%s:%d: %s %s %s", peer[0], peer[1], head.method, environ["PATH_INFO"], response.status)
        return reusable

    def _run(self, environ: dict[str, Any], response: Response) -> bool:
        result = self.app(environ, response.start_response)
        try:
            for chunk in result:
                if chunk:  # PEP 3333: the head waits for the first non-empty chunk
                    response.write(chunk)
            return response.finish()
        finally:
            if hasattr(result, "close"):
                result.close()

    def _environ(self, head: Head, body: BinaryIO | Body, peer: tuple[Any, ...]) -> dict[str, Any]:
        environ = {**self._base, "REQUEST_METHOD": head.method, "QUERY_STRING": head.query.decode("latin-1"),
                   "PATH_INFO": unquote_to_bytes(head.path).decode("latin-1"), "SERVER_PROTOCOL": head.version,
                   "REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1]), "wsgi.input": body}  # fmt: skip
        for name, value in head.fields.items():
            if "_" not in name:  # X_Token would pose as X-Token in HTTP_X_TOKEN: dropped, as nginx does
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        environ["CONTENT_TYPE"] = environ.pop("HTTP_CONTENT_TYPE", "")
        environ.pop("HTTP_CONTENT_LENGTH", None)
        environ["CONTENT_LENGTH"] = str(head.length)
        return environ
