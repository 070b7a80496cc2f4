"""Hostile clients against the real controller's REST API (issue 16, item 4): connection floods and
slow clients (slowloris) from one peer must not stop another from placing pods.

Before the API moved to cheroot behind controller/httpgate.py, 300 idle TCP connections took all
256 threads of the hand-written server (the rest and every agent got 503 for 30 s), and a request
declaring a body it never sent held its connection 30 s, token or not.

The controller is the real process in the rig's management namespace, speaking TLS with its own CA
as in the lab. The attacker is one peer, 127.0.0.2; the agent's own client is another, 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from deploy.lab import netns
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from node_agent.controller_client import ControllerClient

pytestmark = pytest.mark.rig
ATTACKER = "127.0.0.2"
PER_PEER = 64  # the default [api] max_connections_per_peer
POD = {"ifname": "eth0", "namespace": "default", "mode": "macvlan"}
BODY_NEVER_SENT = b"POST /v1/nodes/n1/pods HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"


@pytest.fixture
def make_controller(rig, bridge, make_host) -> Iterator[Callable[..., Controller]]:
    """Factory: a controller with node n1 registered, `[api]` limits as given (defaults otherwise)."""
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    n1 = make_host("n1", cidr="198.18.0.11/24")
    dpid = int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)
    started: list[Controller] = []

    def make(**api_limits: float) -> Controller:
        ctl = Controller(workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns,
                         nodes={"n1": NodeSpec("n1", dpid=dpid, port=n1.ofport)}, trusted={},
                         pool=PoolSpec("198.18.0.0/24", ranges=("198.18.0.100-198.18.0.250",)), api_limits=api_limits)
        started.append(ctl)
        ctl.start()
        ctl.wait_healthy(timeout=15, switches=1)
        ctl.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip}, node="n1")
        return ctl

    yield make
    for ctl in started:
        ctl.stop()


class Attacker:
    """Connections from one peer address, made inside the controller's namespace."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.opened: list[socket.socket] = []
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # an attacker checks nothing
        self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE

    def tcp(self, count: int) -> list[socket.socket]:
        made = []
        with netns.entered(self.ctl.ns):
            for _ in range(count):
                sock = socket.socket()
                sock.bind((ATTACKER, 0))
                sock.settimeout(5)
                sock.connect((self.ctl.api_host, self.ctl.api_port))
                made.append(sock)
        self.opened += made
        return made

    def tls_sending(self, data: bytes) -> socket.socket:
        """A TLS connection that sends `data` and then nothing."""
        sock = self.tls.wrap_socket(self.tcp(1)[0])
        self.opened[-1] = sock
        sock.sendall(data)
        return sock

    def close(self) -> None:
        for sock in self.opened:
            sock.close()


@pytest.fixture
def attacker() -> Iterator[Callable[[Controller], Attacker]]:
    made: list[Attacker] = []
    yield lambda ctl: made.append(Attacker(ctl)) or made[-1]
    for one in made:
        one.close()


def answer_of(sock: socket.socket, *, within: float = 5) -> bytes:
    """The status line of what the server sent before it closed the connection (TimeoutError if
    it did not close within `within` seconds)."""
    sock.settimeout(within)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data.split(b"\r\n", 1)[0]


def closed_by_server(socks: list[socket.socket], *, within: float) -> int:
    """How many of `socks` the server closed (or reset) within `within` seconds, waiting for all at once."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                try:
                    closed += key.fileobj.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
    return closed


def agent_client(ctl: Controller) -> ControllerClient:
    return ControllerClient(ctl.url, "n1", token=ctl.nodes["n1"].token, ca_file=str(ctl.ca_file), timeout=5)


def test_pods_are_placed_while_one_peer_floods_the_api_with_idle_and_slow_connections(make_controller, attacker):
    ctl = make_controller()
    flood = attacker(ctl)
    for _ in range(10):
        flood.tls_sending(b"POST /v1/nodes/n1/pods HTTP/1.1\r\nHost: c\r\n")  # a head never finished
    slow_bodies = [flood.tls_sending(BODY_NEVER_SENT) for _ in range(10)]
    idle = flood.tcp(300)
    refused = closed_by_server(idle, within=1)

    with netns.entered(ctl.ns):  # the agent's own client, from another peer (127.0.0.1)
        client = agent_client(ctl)
        placed = [client.allocate({**POD, "container_id": f"c{index}", "name": f"web-{index}"}) for index in range(10)]
    assert len({pod["ip"] for pod in placed}) == 10
    assert ctl.request("GET", "/v1/nodes/n1/pods", node="n1")["pods"]  # and plain REST calls too

    assert refused >= 300 - PER_PEER  # the peer's connections past its limit: closed at accept
    assert all(answer_of(sock) == b"HTTP/1.1 401 Unauthorized" for sock in slow_bodies)
    assert "refusing connections from 127.0.0.2" in ctl.logfile.read_text()


def test_a_body_never_sent_without_a_token_is_answered_401_at_once_and_closed(make_controller, attacker):
    ctl = make_controller()
    assert answer_of(attacker(ctl).tls_sending(BODY_NEVER_SENT)) == b"HTTP/1.1 401 Unauthorized"


def test_a_body_never_sent_with_a_token_is_408_after_the_body_deadline(make_controller, attacker):
    ctl = make_controller(body_timeout=1)
    token = ctl.nodes["n1"].token.encode()
    sock = attacker(ctl).tls_sending(BODY_NEVER_SENT.replace(b"Host: c\r\n", b"Host: c\r\nAuthorization: Bearer " + token
                                                             + b"\r\n"))
    assert answer_of(sock) == b"HTTP/1.1 408 Request Timeout"


def test_a_head_never_finished_is_408_and_a_silent_connection_closed(make_controller, attacker):
    ctl = make_controller(header_timeout=1)
    flood = attacker(ctl)
    partial, silent = flood.tls_sending(b"GET /v1/health HTTP/1.1\r\nHo"), flood.tcp(1)[0]
    assert answer_of(partial) == b"HTTP/1.1 408 Request Timeout"
    assert closed_by_server([silent], within=5) == 1


def test_a_second_peer_is_served_while_the_first_holds_every_connection_it_may(make_controller, attacker):
    ctl = make_controller(max_connections_per_peer=8, header_timeout=60)
    flood = attacker(ctl)
    held = flood.tcp(8)
    assert closed_by_server(flood.tcp(1), within=5) == 1  # the ninth: refused
    assert ctl.health()["status"] == "ok"  # another peer: served
    assert closed_by_server(held, within=0.5) == 0
