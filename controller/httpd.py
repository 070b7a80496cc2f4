"""The REST API's HTTP/1.1 server: cheroot's worker pool and WSGI gateway, behind our Gate.

cheroot (the CherryPy project's server) serves keep-alive connections from a pool of threads,
parses request lines, runs the WSGI application and writes its answers. The agents' API sits
where pods can reach it (on the segment, in ipvlan mode), so we add what a hostile client needs:

- controller/httpgate.py, in front of the pool: connection limits per peer and in all (checked at
  accept), TLS handshakes and request heads read without a thread, deadlines on idle connections
  and on heads;
- limits on a head (414 for a request line over 8 KiB, 431 for header fields over 16 KiB or 100)
  and on a body (413 over `max_body`, before reading it); bodies only with Content-Length (411
  for chunked: our agents never send it); header lines strict (no folding, one Host, one
  Content-Length), so two parsers never disagree on where a request ends;
- a body is read by the application, never ahead of it: the API reads it only once the token
  checked out, so a request without a valid token is answered 401 without its body being awaited.
  What the application leaves unread is not drained either: the connection closes after the
  answer. `Expect: 100-continue` is answered when the application starts reading, not before;
- a deadline on a body (`body_timeout` from the end of its head) and on the client taking an
  answer (`body_timeout` again), so a pool thread waits for no client longer than that;
- the server's own answers are JSON `{"error": ...}` like the API's (with the application's
  `epoch` if it has one, as the API does); an application error is logged with its traceback and
  answered 500 without it.

Cost: a request handed from the Gate to a pool thread costs two thread wake-ups where a thread per
connection cost one, and under the GIL that hand-over cost as much as parsing the request. So a pool
thread done with a request waits up to HOVER for the connection's next one while no other waits
(an agent's burst of ADDs then stays on one thread); only a quiet connection goes back to the Gate.
"""

from __future__ import annotations

import json
import logging
import math
import re
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from cheroot import errors, wsgi
from cheroot.server import HTTPConnection, HTTPRequest, KnownLengthRFile, SizeCheckWrapper

from controller.config import ApiLimits
from controller.httpgate import Gate, Stage

LOG = logging.getLogger("underlay.http")
MAX_LINE = 8192  # the request line, CRLF included
MAX_FIELDS_SIZE = 16384  # the header fields and the blank line after them
MAX_FIELDS = 100
HEAD_BUFFER = MAX_LINE + MAX_FIELDS_SIZE + 512  # past this, a head is over a limit (cheroot reads 256 at a time)
RECV_SIZE = 65536
HOLD_LIMIT = 65536  # an answer up to this size leaves in one send
BACKLOG = 256  # a node's burst of pod ADDs must queue, not be reset
SHUTDOWN_GRACE = 5  # seconds a request in progress gets to finish at shutdown
HOVER = 0.01  # seconds a pool thread waits for a connection's next request before the Gate takes it
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
LENGTH = re.compile(rb"[0-9]{1,18}")
UNIQUE = (b"Host", b"Content-Length", b"Transfer-Encoding")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Refused(Exception):
    """A request the server answers itself with `status`, then closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def read_fields(rfile: Any) -> dict[bytes, bytes]:
    """The header fields up to the blank line, by title-cased name; repeated ones joined by ", ".
    A name must be a token: that also refuses a space before the colon and obs-fold (RFC 9112 §5).
    Names with "_" are dropped: X_Token would pose as X-Token in the WSGI environ (nginx does so too)."""
    fields: dict[bytes, bytes] = {}
    for _ in range(MAX_FIELDS + 1):
        line = rfile.readline()
        if line == b"\r\n":
            return fields
        if not line.endswith(b"\r\n"):
            raise Refused(400, "header line: not ended by CRLF")
        name, colon, value = line[:-2].partition(b":")
        if not colon or not TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value or b"\0" in value:
            raise Refused(400, "malformed header line")
        if b"_" in name:
            continue
        key, value = name.title(), value.strip(b" \t")
        if key in fields and key in UNIQUE:
            raise Refused(400, f"{key.decode()}: more than one")
        fields[key] = fields[key] + b", " + value if key in fields else value
    raise Refused(431, f"more than {MAX_FIELDS} header fields")


def body_length(fields: dict[bytes, bytes]) -> int:
    coding = fields.get(b"Transfer-Encoding")
    if coding is not None:
        if coding.rpartition(b",")[2].strip().lower() != b"chunked":
            raise Refused(400, "Transfer-Encoding: the body length cannot be known")  # RFC 9112 §6.3: a MUST
        # RFC 9112 §6.3 lets a server refuse a body without Content-Length with 411, which names the fix
        raise Refused(411, "Transfer-Encoding is not supported: send Content-Length")
    value = fields.get(b"Content-Length", b"0")
    if not LENGTH.fullmatch(value):
        raise Refused(400, "Content-Length: not one non-negative integer")
    return int(value)


class Reader:
    """conn.rfile: one buffer, filled without blocking by the Gate (`fill`) and read by a pool
    thread (`read`, `readline`) with `deadline`, a time by `clock`, for the whole of what it waits for."""

    def __init__(self, sock: socket.socket, *, clock: Callable[[], float]) -> None:
        self.sock, self.clock = sock, clock
        self.deadline = math.inf
        self.eof = False
        self.closed = False
        self.bytes_read = 0  # cheroot's statistics
        self._buf = bytearray()
        self._pos = 0

    # the Gate's side: never blocks
    def fill(self) -> None:
        """Take what has arrived. A short read means the kernel had no more (what comes later wakes
        the epoll again), unless TLS holds more in its own buffer, where no epoll sees it."""
        while not self.eof and self.buffered() < HEAD_BUFFER:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            self.eof = not data
            self._buf += data
            if len(data) < RECV_SIZE and not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                return

    def drop_input(self) -> bool:
        """Read and forget what has arrived; False once the client closed."""
        for _ in range(16):
            try:
                if not self.sock.recv(RECV_SIZE):
                    return False
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
        return True

    def head_within(self, timeout: float) -> bool:
        """Whether a whole request head is in, or comes within `timeout` seconds (a pool thread's wait)."""
        if self.head_ready():
            return True
        if timeout <= 0 or self.buffered() or not select.select([self.sock], [], [], timeout)[0]:
            return False
        self.sock.setblocking(False)
        self.fill()
        return self.head_ready()

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def head_ready(self) -> bool:
        return self._buf.find(b"\r\n\r\n", self._pos) >= 0 or self.buffered() >= HEAD_BUFFER

    # cheroot's side
    def has_data(self) -> bool:
        return self.buffered() > 0

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + size if size >= 0 else len(self._buf))
            if end >= 0:
                return self._take(end + 1 - self._pos)
            if 0 <= size <= self.buffered() or not self._recv():
                return self._take(self.buffered() if size < 0 else min(size, self.buffered()))

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        while (size < 0 or self.buffered() < size) and self._recv():
            pass
        return self._take(self.buffered() if size < 0 else min(size, self.buffered()))

    def close(self) -> None:
        self.closed = True

    def _recv(self) -> bool:
        if self.eof:
            return False
        left = self.deadline - self.clock()
        if left <= 0:
            raise TimeoutError("timed out")  # cheroot answers 408 if a request was started
        self.sock.settimeout(left)
        data = self.sock.recv(RECV_SIZE)
        self.eof = not data
        self._buf += data
        return bool(data)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        self.bytes_read += size
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > RECV_SIZE:
            del self._buf[: self._pos]
            self._pos = 0
        return data


class Writer:
    """conn.wfile: sends within `timeout` seconds a write, or the client is gone. While held (one
    answer), writes wait in a buffer: an answer's head and body leave in one send."""

    def __init__(self, sock: socket.socket, *, timeout: float, clock: Callable[[], float]) -> None:
        self.sock, self.timeout, self.clock = sock, timeout, clock
        self.bytes_written = 0  # cheroot's statistics
        self._held: bytearray | None = None

    def hold(self) -> None:
        self._held = bytearray()

    def release(self) -> None:
        held, self._held = self._held, None
        if held:
            self.send_now(held)

    def write(self, data: bytes) -> int:
        if self._held is None:
            self.send_now(data)
        else:
            self._held += data
            if len(self._held) > HOLD_LIMIT:
                self.release()
                self.hold()
        return len(data)

    def send_now(self, data: bytes | bytearray) -> None:
        deadline = self.clock() + self.timeout
        view = memoryview(data)
        while view:
            left = deadline - self.clock()
            if left <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(left)
            view = view[self.sock.send(view) :]
        self.bytes_written += len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class ContinueFirst:
    """wsgi.input that answers `Expect: 100-continue` when the application first reads."""

    def __init__(self, rfile: KnownLengthRFile, wfile: Writer) -> None:
        self.rfile, self.wfile, self.sent = rfile, wfile, False

    @property
    def remaining(self) -> int:
        return int(self.rfile.remaining)

    def read(self, size: int | None = None) -> bytes:
        self._go_on()
        return bytes(self.rfile.read(size))

    def readline(self, size: int | None = None) -> bytes:
        self._go_on()
        return bytes(self.rfile.readline(size))

    def _go_on(self) -> None:
        if not self.sent:
            self.sent = True
            self.wfile.send_now(b"HTTP/1.1 100 Continue\r\n\r\n")


class Request(HTTPRequest):
    """One request: cheroot parses the request line; the header fields, the limits, the body's
    framing and the server's own (JSON) answers are ours."""

    expect_continue = False

    def parse_request(self) -> None:
        self.rfile = SizeCheckWrapper(self.conn.rfile, MAX_LINE)
        try:
            if not self.read_request_line():  # type: ignore[no-untyped-call]
                return
        except errors.MaxSizeExceeded:
            self.simple_response("414", f"request line longer than {MAX_LINE} bytes")
            return
        self.rfile = SizeCheckWrapper(self.conn.rfile, MAX_FIELDS_SIZE)
        try:
            self.ready = self.read_request_headers()
        except errors.MaxSizeExceeded:
            self.simple_response("431", f"header fields longer than {MAX_FIELDS_SIZE} bytes")
        except Refused as refused:
            self.simple_response(str(refused.status), refused.reason)

    def read_request_headers(self) -> bool:
        self.inheaders = read_fields(self.rfile)
        length = body_length(self.inheaders)
        limits: ApiLimits = self.server.limits
        if length > limits.max_body:
            raise Refused(413, f"body: {length} bytes is more than the limit of {limits.max_body}")
        tokens = {token.strip().lower() for token in self.inheaders.get(b"Connection", b"").split(b",")}
        http11 = self.response_protocol == "HTTP/1.1"
        self.close_connection = b"close" in tokens if http11 else b"keep-alive" not in tokens
        self.chunked_read = False
        self.expect_continue = http11 and length > 0 and self.inheaders.get(b"Expect", b"").lower() == b"100-continue"
        self.conn.rfile.deadline = self.conn.rfile.clock() + limits.body_timeout
        return True

    def respond(self) -> None:
        body = KnownLengthRFile(self.conn.rfile, int(self.inheaders.get(b"Content-Length", 0)))
        self.rfile = ContinueFirst(body, self.conn.wfile) if self.expect_continue else body
        self.conn.wfile.hold()
        try:
            self.server.gateway(self).respond()
            if self.ready:
                self.ensure_headers_sent()
            if self.chunked_write:
                self.conn.wfile.write(b"0\r\n\r\n")
        finally:
            self.conn.wfile.release()

    def send_headers(self) -> None:
        if getattr(self.rfile, "remaining", 0) > 0:  # a body the application did not read: never drained
            self.close_connection = True
        self.outheaders.append((b"Date", _http_date()))  # cheroot formats one for every answer
        super().send_headers()

    def simple_response(self, status: Any, msg: Any = "") -> None:
        """The server's own answer (cheroot calls this too): JSON, and the connection closes."""
        code = int(str(status)[:3])
        if self.server.answered is not None:
            self.server.answered(None, code)
        reason = "internal error" if code == 500 else str(msg) or HTTPStatus(code).phrase.lower()
        epoch = getattr(self.server.wsgi_app, "epoch", None)  # the API's, in every answer (API.md)
        body = json.dumps({"error": reason, **({"epoch": epoch} if epoch is not None else {})}).encode()
        self.close_connection = True
        head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.sent_headers = True
        try:
            self.conn.wfile.send_now(head.encode("latin-1") + body)
        except OSError as err:
            LOG.debug("%s: cannot send %d: %r", self.conn.remote_addr, code, err)


class Gateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway with the environ built in fewer steps (it showed in a profile): the
    part that never changes is made once per server. Each application answer is told to the
    server's `answered` (the metrics)."""

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.req.server.answered is not None:
            self.req.server.answered(self.env, int(status[:3]))
        return super().start_response(status, headers, exc_info)

    def get_environ(self) -> dict[str, Any]:  # type: ignore[override]  # cheroot's stub says None
        req, conn = self.req, self.req.conn
        env = {**req.server.environ, "PATH_INFO": req.path.decode("latin-1"), "QUERY_STRING": req.qs.decode("latin-1"),
               "REQUEST_METHOD": req.method.decode("latin-1"), "REQUEST_URI": req.uri.decode("latin-1"),
               "SERVER_PROTOCOL": req.request_protocol.decode("latin-1"), "REMOTE_ADDR": conn.remote_addr,
               "REMOTE_PORT": str(conn.remote_port), "wsgi.input": req.rfile}  # fmt: skip
        for name, value in req.inheaders.items():
            env["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
        if "HTTP_CONTENT_TYPE" in env:
            env["CONTENT_TYPE"] = env.pop("HTTP_CONTENT_TYPE")
        if "HTTP_CONTENT_LENGTH" in env:
            env["CONTENT_LENGTH"] = env.pop("HTTP_CONTENT_LENGTH")
        if conn.ssl_env:
            env.update(conn.ssl_env)
        return env


class Connection(HTTPConnection):
    """A client's connection: its buffer and deadlines, and where the Gate keeps it between requests."""

    RequestHandlerClass = Request
    stage = Stage.HEAD  # the Gate's to set
    deadline = math.inf
    wants_write = False  # a TLS handshake waits to send

    def __init__(self, server: HttpServer, sock: socket.socket, address: Any) -> None:
        def files(sock: socket.socket, mode: str, size: int) -> Reader | Writer:
            if "r" in mode:
                return Reader(sock, clock=server.clock)
            return Writer(sock, timeout=server.limits.body_timeout, clock=server.clock)

        super().__init__(server, sock, makefile=files)
        self.fd = sock.fileno()
        self.remote_addr, self.remote_port = address[0], address[1]
        if server.tls is not None:
            self.ssl_env = {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def communicate(self) -> bool:
        """Serve requests for as long as each next one follows its answer within HOVER seconds, and
        no other connection waits for a pool thread: a client that keeps its connection busy (an
        agent's burst of ADDs) is then served without a hand-over to the Gate and back each time."""
        while super().communicate():  # type: ignore[no-untyped-call]
            if not self._next_head():
                return True
            self.rfile.deadline = self.server.clock() + self.server.limits.header_timeout
        return False

    def _next_head(self) -> bool:
        """Whether the next request's head is in, or comes within HOVER while no other connection
        waits for a pool thread (one that comes to wait then waits HOVER at most)."""
        waiting = self.server.requests._queue.queue  # the pool's queue, peeked at without its lock
        return bool(self.rfile.head_within(0 if waiting else HOVER))

    def close(self) -> None:
        self.server.gate.retire(self)


class HttpServer(wsgi.Server):
    """Serves `app` on host:port from serve_forever() until shutdown(). It binds here, so a taken
    address raises OSError before anything is served."""

    ConnectionClass = Connection

    def __init__(self, app: WsgiApp, host: str, port: int, *, limits: ApiLimits = ApiLimits(),
                 tls: ssl.SSLContext | None = None, clock: Callable[[], float] = time.monotonic,
                 answered: Callable[[dict[str, Any] | None, int], None] | None = None) -> None:
        """`answered(environ, status)` is told every answer (environ None: the server's own)."""
        super().__init__((host, port), app, numthreads=limits.threads, server_name="underlay",
                         request_queue_size=BACKLOG, timeout=math.ceil(limits.idle_timeout),
                         shutdown_timeout=SHUTDOWN_GRACE)
        self.limits, self.tls, self.clock, self.answered = limits, tls, clock, answered
        self.gateway = Gateway
        self.prepare()
        self.environ = {"ACTUAL_SERVER_PROTOCOL": self.protocol, "SCRIPT_NAME": "", "SERVER_NAME": self.server_name,
                        "SERVER_PORT": str(self.bind_addr[1]), "SERVER_SOFTWARE": self.software,
                        "wsgi.errors": sys.stderr, "wsgi.input_terminated": False, "wsgi.multiprocess": False,
                        "wsgi.multithread": True, "wsgi.run_once": False, "wsgi.url_scheme": "http",
                        "wsgi.version": (1, 0)}  # fmt: skip

    def prepare(self) -> None:
        super().prepare()
        theirs, self._connections = self._connections, Gate(self, clock=self.clock)  # type: ignore[has-type]
        theirs.close()

    @property
    def gate(self) -> Gate:
        gate: Gate = self._connections
        return gate

    @property
    def server_address(self) -> tuple[str, int]:
        return self.bind_addr[0], self.bind_addr[1]

    def serve_forever(self) -> None:
        self.serve()

    def shutdown(self) -> None:
        """Stop accepting, close every connection not in a request, and wait (up to SHUTDOWN_GRACE)
        for the requests in progress to be answered."""
        self.stop()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's log lines: its errors (an application's exception) as errors, the rest (clients
        that left or sent nonsense) at debug."""
        LOG.log(level if level >= logging.ERROR else logging.DEBUG, "%s", msg, exc_info=traceback)

    @classmethod
    def prepare_socket(cls, bind_addr: Any, family: int, type: int, proto: int, nodelay: bool, ssl_adapter: Any,
                       reuse_port: bool = False) -> socket.socket:  # fmt: skip
        sock: socket.socket = super().prepare_socket(bind_addr, family, type, proto, nodelay, ssl_adapter, reuse_port)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "::" is not also every IPv4 address
        return sock


_dates: list[tuple[int, bytes]] = [(0, b"")]


def _http_date() -> bytes:
    """The Date header's value, formatted once a second."""
    now = int(time.time())
    second, text = _dates[-1]
    if second != now:
        text = formatdate(now, usegmt=True).encode("ascii")
        _dates[-1] = (now, text)
    return text


def tls_context(*, cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The server's TLS: its certificate, and the CA its clients' certificates must come from, if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.num_tickets = 0  # agents keep their connections; nobody resumes a session
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
