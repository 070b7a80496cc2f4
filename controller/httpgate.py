"""The REST API's front door: no worker thread is spent on a client until its request head is in.

cheroot (controller/httpd.py) runs each request on a pool thread, reading with blocking sockets.
A pool thread waiting for a client that sends slowly, or not at all, is a thread taken from the
node agents; 300 idle connections took every thread of the hand-written server before this one.
So the Gate, one thread with an epoll, stands between the listener and the pool:

- accept: a connection over the per-peer limit or the total limit is closed at once (plain
  HTTP gets a canned 503 first), before any thread or TLS work is spent on it;
- TLS: the handshake runs here, non-blocking, step by step as the client's bytes arrive;
- the head: the client's bytes are read here, non-blocking, into the connection's buffer until
  the blank line that ends a request head (or the size limit) is in; only then does a pool thread
  get the connection, and parsing it never waits for the network;
- deadlines: a head must arrive within `header_timeout` of the connection or its first byte, an
  idle keep-alive connection lives `idle_timeout`; both are enforced here, every TICK;
- closing: a connection a pool thread is done with comes back here, half-closed, and its input is
  read and dropped until the client closes too (or LINGER): closing with input unread would reset
  the connection, and the reset can destroy the answer before the client read it (RFC 9112 §9.6).

Each connection is armed one-shot (EPOLLONESHOT): an event disarms it, so whoever holds it next,
the Gate or a pool thread, owns it alone until it is armed again; a pool thread done with a
request arms it itself, with no hand-over to this thread. What a pool thread still waits for is a
body (only once the application has read the token) and a client reading the answer; both have
their own deadline (controller/httpd.py).

cheroot's ConnectionManager interface (put, run, stop, close, can_add_keepalive_connection) is
what the server calls; this class implements it in its stead.
"""

from __future__ import annotations

import collections
import enum
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.httpd import Connection, HttpServer

LOG = logging.getLogger("underlay.http")
TICK = 0.25  # seconds between deadline checks
LINGER = 2.0  # seconds a closing connection may take to close its side
ACCEPTS_PER_WAKE = 64
WARN_EVERY = 10.0  # seconds between two warnings about one refused peer
READ, WRITE = select.EPOLLIN | select.EPOLLONESHOT, select.EPOLLOUT | select.EPOLLONESHOT


class Stage(enum.Enum):
    HANDSHAKE = "handshake"  # TLS handshake in progress
    HEAD = "head"  # waiting for the rest of a request head
    IDLE = "idle"  # keep-alive, between requests
    LINGER = "linger"  # half-closed, dropping input until the client closes
    BUSY = "busy"  # on a pool thread
    CLOSED = "closed"


def canned(status: str, reason: str) -> bytes:
    """A whole response, JSON like the API's, that closes the connection: sent without blocking."""
    body = ('{"error": "%s"}' % reason).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


BUSY_503 = canned("503 Service Unavailable", "too many connections, try again")
TIMEOUT_408 = canned("408 Request Timeout", "request head not received in time")
PLAIN_INTO_TLS = canned("400 Bad Request", "this port speaks TLS: use https://")


class Gate:
    """Owns every connection that is not on a pool thread. `_conns` and the epoll registrations
    change on its thread only; pool threads only re-arm what they hold (and the counts, under a lock)."""

    def __init__(self, server: HttpServer, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.limits = server.limits
        self.tls = server.tls
        self.clock = clock
        self._listener: socket.socket = server.socket
        self._listener.setblocking(False)
        self._wake_in, self._wake_out = socket.socketpair()
        self._epoll = select.epoll()
        self._epoll.register(self._listener.fileno(), select.EPOLLIN)
        self._epoll.register(self._wake_in.fileno(), select.EPOLLIN)
        self._conns: dict[int, Connection] = {}
        self._lock = threading.Lock()  # guards the counts and _closed
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._total = 0
        self._warned: dict[str, float] = {}
        self._stopping = False
        self._closed = False
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def open(self) -> int:
        """Connections open now: parked here, on a pool thread, or closing."""
        with self._lock:
            return self._total

    # -- cheroot's ConnectionManager interface ------------------------------------------------
    @property
    def can_add_keepalive_connection(self) -> bool:
        return not self._stopping  # the limits apply at accept; a connection admitted may stay

    def put(self, conn: Connection) -> None:
        """A pool thread is done with a request and the connection stays open (a pool thread)."""
        if conn.rfile.head_ready():
            self._dispatch(conn)  # pipelined: the next head is in already
        elif conn.rfile.buffered():
            self._arm(conn, Stage.HEAD, self.limits.header_timeout)
        else:
            self._arm(conn, Stage.IDLE, self.limits.idle_timeout)

    def retire(self, conn: Connection) -> None:
        """A pool thread is done with the connection: close it after the client closes (a pool thread)."""
        try:
            conn.socket.shutdown(socket.SHUT_WR)  # our FIN goes right after the answer
        except OSError:
            pass
        self._arm(conn, Stage.LINGER, LINGER)

    def run(self, expiration_interval: float) -> None:
        self._stopped.clear()
        next_check = self.clock() + TICK
        listener, wake = self._listener.fileno(), self._wake_in.fileno()
        try:
            while not self._stopping:
                for fd, _ in self._epoll.poll(TICK):
                    if fd == listener:
                        self._accept()
                    elif fd != wake and (conn := self._conns.get(fd)) is not None:
                        self._serve(conn)
                if (now := self.clock()) >= next_check:
                    self._expire(now)
                    next_check = now + TICK
        finally:
            self._stopped.set()

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_out.send(b"\0")
        except OSError:
            pass
        self._stopped.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for conn in list(self._conns.values()):
            if conn.stage is not Stage.BUSY:  # a pool thread's: closed when it is done (see _arm)
                self._close(conn)
        self._epoll.close()
        self._wake_in.close()
        self._wake_out.close()

    # -- accepting -----------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as err:  # out of file descriptors: let the others finish first
                LOG.warning("REST API: cannot accept a connection: %s", err)
                time.sleep(0.1)
                return
            peer = str(address[0])
            if not self._admit(peer):
                self._refuse(sock, peer)
                continue
            try:
                conn = self._connection(sock, address)
            except OSError as err:  # the client left already
                LOG.debug("%s: connection ends at accept: %s", peer, err)
                self._release(peer)
                sock.close()
                continue
            self._conns[conn.fd] = conn
            conn.stage, conn.deadline = Stage.HANDSHAKE if self.tls else Stage.HEAD, self.clock() + self.limits.header_timeout
            self._epoll.register(conn.fd, READ)

    def _admit(self, peer: str) -> bool:
        with self._lock:
            if self._per_peer[peer] >= self.limits.max_connections_per_peer or self._total >= self.limits.max_connections:
                return False
            self._per_peer[peer] += 1
            self._total += 1
            return True

    def _release(self, peer: str) -> None:
        with self._lock:
            self._total -= 1
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        """Close now. Plain HTTP gets a 503 first, best effort: what the client sent already is read
        first, as closing with input unread would reset the connection (and maybe the 503 with it)."""
        if not self.tls:
            try:
                sock.send(BUSY_503, socket.MSG_DONTWAIT)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536, socket.MSG_DONTWAIT)
            except OSError:
                pass
        sock.close()
        now = self.clock()
        if len(self._warned) > 4096:  # many peers: forget when each was warned about, not the memory
            self._warned.clear()
        if now - self._warned.get(peer, -WARN_EVERY) >= WARN_EVERY:
            self._warned[peer] = now
            LOG.warning("REST API: refusing connections from %s: %d open from it (limit %d), %d in all (limit %d)",
                        peer, self._per_peer[peer], self.limits.max_connections_per_peer, self._total,
                        self.limits.max_connections)

    def _connection(self, sock: socket.socket, address: Any) -> Connection:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return self.server.ConnectionClass(self.server, sock, address)

    # -- connections held here -----------------------------------------------------------------
    def _arm(self, conn: Connection, stage: Stage, timeout: float) -> None:
        """Hand `conn` to this thread for its next event (any thread; the caller lets go of it)."""
        conn.deadline = self.clock() + timeout
        try:
            conn.socket.setblocking(False)
            with self._lock:
                if self._closed:
                    raise ValueError("the Gate is closed")
                conn.stage = stage
            self._epoll.modify(conn.fd, READ)
        except (OSError, ValueError):  # shutting down (here, or close() took it meanwhile): nobody waits for it
            self._close(conn)

    def _serve(self, conn: Connection) -> None:
        try:
            if conn.stage is Stage.LINGER:
                if conn.rfile.drop_input():
                    self._arm(conn, Stage.LINGER, max(conn.deadline - self.clock(), 0))
                else:
                    self._close(conn)
                return
            if conn.stage is Stage.HANDSHAKE and not self._handshake(conn):
                return
            self._read_head(conn)
        except (OSError, EOFError) as err:  # reset, EOF, TLS alert: nothing to answer
            LOG.debug("%s:%s: connection ends (%s): %r", conn.remote_addr, conn.remote_port, conn.stage.value, err)
            self._close(conn)

    def _handshake(self, conn: Connection) -> bool:
        """One step of the TLS handshake; True once it is done."""
        assert isinstance(conn.socket, ssl.SSLSocket)
        try:
            conn.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
            conn.wants_write = isinstance(want, ssl.SSLWantWriteError)
            self._rearm(conn)
            return False
        except ssl.SSLError as err:
            if err.reason == "HTTP_REQUEST":
                _send_raw(conn.socket, PLAIN_INTO_TLS)
            raise
        conn.stage, conn.wants_write = Stage.HEAD, False
        return True

    def _read_head(self, conn: Connection) -> None:
        """Read what the client sent; hand the connection to the pool once a head is complete."""
        had_input = conn.rfile.buffered()
        conn.rfile.fill()
        if conn.rfile.head_ready():  # also after the client's EOF: a request sent whole is answered
            self._dispatch(conn)
            return
        if conn.rfile.eof:
            raise EOFError("closed by the client")
        if conn.stage is Stage.IDLE and not had_input and conn.rfile.buffered():
            conn.stage, conn.deadline = Stage.HEAD, self.clock() + self.limits.header_timeout
        self._rearm(conn)

    def _rearm(self, conn: Connection) -> None:
        """Wait for `conn`'s next event in the same stage, with the same deadline (this thread)."""
        self._epoll.modify(conn.fd, WRITE if conn.wants_write else READ)

    def _dispatch(self, conn: Connection) -> None:
        conn.stage = Stage.BUSY
        conn.rfile.deadline = min(conn.deadline, self.clock() + self.limits.header_timeout)
        self.server.process_conn(conn)

    def _expire(self, now: float) -> None:
        for conn in list(self._conns.values()):
            if conn.stage is Stage.BUSY or conn.deadline > now:
                continue
            if conn.stage is Stage.HEAD:
                LOG.debug("%s:%s: no complete request head within %gs", conn.remote_addr, conn.remote_port,
                          self.limits.header_timeout)
                if conn.rfile.buffered():  # a request begun gets an answer; silence gets none
                    _farewell(conn.socket, TIMEOUT_408)
            self._close(conn)

    # -- the end of a connection ---------------------------------------------------------------
    def _close(self, conn: Connection) -> None:
        with self._lock:
            if conn.stage is Stage.CLOSED:
                return
            conn.stage = Stage.CLOSED
        self._conns.pop(conn.fd, None)
        try:
            conn.socket.close()  # also takes it out of the epoll
        except OSError:
            pass
        self._release(str(conn.remote_addr))


def _send_raw(sock: socket.socket, data: bytes) -> None:
    """Plain bytes past TLS, if any; best effort, never blocking (a socket buffer holds them whole)."""
    try:
        socket.socket.send(sock, data, socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        pass


def _farewell(sock: socket.socket, data: bytes) -> None:
    """A small answer, through TLS if the connection has it; best effort on a non-blocking socket."""
    try:
        sock.send(data)
    except (OSError, ValueError):
        pass
