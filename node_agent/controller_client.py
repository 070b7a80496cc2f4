"""The agent's one door to the controller: controller/API.md over stdlib http.client.

Errors come in two kinds, as the agent must act on them differently: `TemporaryError` (connection
refused, timeouts, 503: the switch has not acknowledged; retry later, CNI code 11) and
`PermanentError` (400/401/404/409: retrying the same request cannot help); a 503's Retry-After
rides on the error. When and how long to retry is the caller's (`node_agent.retry`). Every answer
carries the controller's epoch; the client remembers the last one and calls `on_new_epoch` when it
changes, so the agent notices a restart.

Over https (the controller's default), the controller's certificate is checked against the CA file
the agent is given (`--ca-file`; the system's CAs without one); plain http is refused unless the
controller is on loopback, where the token never crosses a wire. A certificate that does not check
out is a PermanentError: no retry makes it trusted.

Allocations are coalesced: while one is on its way to the controller, the next ones queue and then
go together in one batch request (`POST .../pods:batch`), each still getting its own answer. One pod
alone costs one round trip as before; when kubelet starts many pods at once, they share requests,
the controller's store commits and the switch's bundles.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

Json = dict[str, Any]  # a JSON object of controller/API.md, as decoded
MAX_BATCH = 128  # pod requests per batch request (the controller takes up to 512)
MAX_IDLE = 8  # idle keep-alive connections kept


class ControllerError(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after  # seconds, from a 503's Retry-After (node_agent.retry)


class TemporaryError(ControllerError):
    """Retry later: the controller is unreachable, or its switch did not acknowledge in time."""


class PermanentError(ControllerError):
    """The controller refused the request (malformed, unauthorised, unknown node, conflict)."""


class ControllerClient:
    def __init__(self, url: str, node: str, *, token: str | Callable[[], str] | None, ca_file: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None, timeout: float = 10.0,
                 connect_to: str | None = None) -> None:
        """`connect_to`: the address to reach the URL's host at instead of resolving its name (as
        curl's --resolve); the certificate is still checked against the name in the URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"controller URL {url!r} must be http(s)://host[:port]")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError(f"controller URL {url!r}: plain http only to a loopback address (the token would "
                             "cross the network in clear); use https:// and a CA file")
        self.url = url.rstrip("/")
        self.node = node
        self._parts = parts
        self._host: str = parts.hostname
        self._connect_to = connect_to
        self._token = token if callable(token) else (lambda: token or "")  # a callable: re-read (tokenfile.py)
        self._timeout = timeout
        self._ca_file = ca_file
        self._tls = _tls_context(ca_file, client_cert, client_key) if parts.scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []  # keep-alive connections, shared: CNI calls are short threads
        self._idle_lock = threading.Lock()
        self._allocations = Coalescer(self._allocate_batch, max_batch=MAX_BATCH)
        self.epoch: str | None = None
        self.on_new_epoch: Callable[[str], None] | None = None  # called when an answer's epoch is not the last one

    # API.md endpoints ------------------------------------------------------------------------
    def health(self) -> Json:
        return self._call("GET", "/v1/health")

    def register(self, *, mac: str, ip: str | None, ip6: str | None = None) -> Json:
        """`ip6`, the uplink's IPv6 address, only when it has one (controller/API.md)."""
        return self._call("PUT", self._node_path(), {"mac": mac, "ip": ip, **({"ip6": ip6} if ip6 else {})})

    def allocate(self, request: Json) -> Json:
        """Allocate and place one pod: `POST .../pods`, or one entry of a batch if others wait too."""
        return self._allocations.submit(request)

    def _allocate_batch(self, requests: list[Json]) -> list[Json | ControllerError]:
        if len(requests) == 1:
            return [self._call("POST", self._node_path("pods"), requests[0])]
        answers = self._call("POST", self._node_path("pods:batch"), {"pods": requests})["results"]
        return [_error(item["status"], item) if "error" in item else item for item in answers]

    def release(self, container_id: str, ifname: str) -> bool:
        path = self._node_path("pods", container_id, ifname)
        return bool(self._call("DELETE", path).get("released"))

    def pods(self) -> list[Json]:
        return list(self._call("GET", self._node_path("pods"))["pods"])

    def sync(self, attachments: list[Json]) -> Json:
        return self._call("PUT", self._node_path("pods"), {"pods": attachments})

    # transport -------------------------------------------------------------------------------
    def _node_path(self, *parts: str) -> str:
        return "/".join(["/v1/nodes", quote(self.node, safe=""), *(quote(p, safe="") for p in parts)])

    def _call(self, method: str, path: str, body: Json | None = None) -> Json:
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = json.dumps(body).encode() if body is not None else None
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            status, data, retry_after = self._send(method, path, payload, headers)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"controller {self.url}: its certificate is not trusted (CA file: "
                                 f"{self._ca_file or 'the system CAs'}): {exc.verify_message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TemporaryError(f"controller {self.url} unreachable: {exc}") from None
        try:
            answer: Json = json.loads(data or b"{}")
        except ValueError:
            answer = {"error": data[:200].decode(errors="replace")}
        self._saw_epoch(answer.get("epoch"))
        if status == 200:
            return answer
        raise _error(status, answer, retry_after=parse_retry_after(retry_after))

    def _saw_epoch(self, epoch: str | None) -> None:
        """A restarted controller has a new epoch: whoever listens (the syncer) hears of it once."""
        if epoch is None or epoch == self.epoch:
            return
        previous, self.epoch = self.epoch, epoch
        if previous is not None and self.on_new_epoch is not None:
            self.on_new_epoch(epoch)

    def _send(self, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """One request on an idle keep-alive connection, or a new one. A connection the controller
        closed while it was idle fails at once: the request is retried once on a new connection
        (the controller never saw it; and allocations are idempotent anyway)."""
        for fresh in (False, True):
            conn = self._connection(fresh=fresh)
            try:
                conn.request(method, self._parts.path.rstrip("/") + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, ssl.SSLEOFError):
                conn.close()
                if fresh:
                    raise
                continue
            except BaseException:
                conn.close()
                raise
            self._give_back(conn)
            return response.status, data, response.getheader("Retry-After")
        raise AssertionError("unreachable")

    def _connection(self, *, fresh: bool) -> http.client.HTTPConnection:
        with self._idle_lock:
            if self._idle and not fresh:
                return self._idle.pop()
        conn = (http.client.HTTPSConnection(self._host, self._parts.port, timeout=self._timeout, context=self._tls)
                if self._tls is not None else http.client.HTTPConnection(self._host, self._parts.port, timeout=self._timeout))
        if self._connect_to is not None:  # TLS still names self._host (SNI, certificate check)
            address = self._connect_to
            conn._create_connection = lambda where, *args: socket.create_connection((address, where[1]), *args)  # type: ignore[attr-defined]
        return conn

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is not None:  # still open: the answer did not say `Connection: close`
            with self._idle_lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)
                    return
        conn.close()


def parse_retry_after(value: str | None) -> float | None:
    """An HTTP Retry-After in seconds (RFC 9110 delay-seconds); None for none, a date, or garbage."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tls_context(ca_file: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    """Checks the controller's certificate and its name (an IP address in the URL: the certificate's
    IP address); made once, shared by every connection of the pool."""
    context = ssl.create_default_context(cafile=ca_file)
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def _error(status: int, answer: Json, *, retry_after: float | None = None) -> ControllerError:
    reason = f"controller: {answer.get('error') or f'HTTP {status}'}"
    kind = TemporaryError if status in (502, 503, 504) else PermanentError
    return kind(reason, status=status, retry_after=retry_after)


@dataclass(eq=False)
class _Entry:
    item: Json
    woken: threading.Event = field(default_factory=threading.Event)  # answered, or asked to lead
    answer: Json | BaseException | None = None


class Coalescer:
    """Runs `send(batch)` for items submitted by many threads, one batch at a time.

    Whoever finds no batch in flight leads: it sends everything queued (up to `max_batch` a time)
    until its own item is answered, then hands the lead to the oldest item still queued. Every
    other thread sleeps until it is answered or handed the lead: one wake-up each, no herd.

    `send` returns one answer per item, in order: a dict, or the exception for that item; if it
    raises, every item of its batch gets that exception."""

    def __init__(self, send: Callable[[list[Json]], list[Json | ControllerError]], *, max_batch: int) -> None:
        self._send = send
        self._max = max_batch
        self._queue: list[_Entry] = []
        self._leading = False
        self._lock = threading.Lock()

    def submit(self, item: Json) -> Json:
        entry = _Entry(item)
        with self._lock:
            self._queue.append(entry)
            follow, self._leading = self._leading, True
        if follow:
            entry.woken.wait()
        if entry.answer is None:  # leading: from the start, or handed the lead
            self._lead(entry)
        answer = entry.answer
        assert answer is not None, "_lead returns only once this entry is answered"
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _lead(self, entry: _Entry) -> None:
        while entry.answer is None:
            with self._lock:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            self._run(batch)
        with self._lock:
            if self._queue:
                self._queue[0].woken.set()  # the oldest still waiting leads next
            else:
                self._leading = False

    def _run(self, batch: list[_Entry]) -> None:
        try:
            answers: list[Json | ControllerError] | BaseException = self._send([entry.item for entry in batch])
        except BaseException as err:  # every waiter must wake up with an answer
            answers = err
        if not isinstance(answers, BaseException) and len(answers) != len(batch):
            answers = PermanentError(f"controller: {len(answers)} answers to a batch of {len(batch)} pod requests")
        for index, entry in enumerate(batch):
            entry.answer = answers if isinstance(answers, BaseException) else answers[index]
            entry.woken.set()

