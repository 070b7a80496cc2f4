"""A real `underlay-controller` process beside the rig's switch, for the lab and the tests.

The controller runs in the rig's management namespace, where the switch reaches it at
127.0.0.1:<openflow port>; callers in other namespaces reach its REST API through a socket made
inside that namespace (`netns.connect_tcp`), so nothing listens in the host's namespace. Its API
speaks TLS with a certificate from a CA of its own (deploy/lab/pki.py, made with the config), as
in production; `tls=False` asks for plain HTTP (on loopback only).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.lab import netns, pki
from deploy.lab.process import start_daemon, stop_pidfile


@dataclass(frozen=True)
class NodeSpec:
    name: str
    dpid: int | None = None
    port: int | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)


@dataclass(frozen=True)
class PoolSpec:
    subnet: str
    ranges: tuple[str, ...] = ()
    gateway: str | None = None
    subnet6: str | None = None  # with it, a dual-stack pool (controller/API.md, "Dual stack")
    ranges6: tuple[str, ...] = ()
    gateway6: str | None = None
    routes: tuple[tuple[str, str], ...] = ()  # (dst, gw) of either family


def render_config(*, store: Path, nodes: Mapping[str, NodeSpec], trusted: Mapping[int, tuple[int, ...]],
                  pool: PoolSpec, openflow_port: int, api_port: int, api_host: str = "127.0.0.1",
                  api_tls: pki.ServerFiles | None = None, api_limits: Mapping[str, float] | None = None,
                  cooldown: float = 0, resync_grace: float = 60, kubeconfig: Path | None = None,
                  election: Mapping[str, Any] | None = None, operator_token_file: Path | None = None,
                  metrics_port: int | None = None, audit_interval: float | None = None,
                  switch_names: Mapping[int, str] | None = None, links: tuple[tuple[str, str], ...] = ()) -> str:
    """The controller's TOML config for a rig (see controller/config.py for every key). With a
    `kubeconfig` the store is the Kubernetes API (pools are then IPPool objects; the [pools] table
    stays, unused, so the config reads the same either way); `election` adds [kubernetes] keys
    (leader_election = true, lease_namespace, ...): a replica of several. A fabric names its switches
    (`switch_names`, by dpid) and lists its `links` ("dpid:port" at each end); without them the
    config is a single switch's, as it always was."""
    lines = [f'store = "{"kubernetes" if kubeconfig else store}"', f"release_cooldown = {cooldown}",
             f"resync_grace = {resync_grace}",
             "[openflow]", 'host = "127.0.0.1"', f"port = {openflow_port}",
             *([f"audit_interval = {audit_interval}"] if audit_interval is not None else []),
             "[api]", f'host = "{api_host}"', f"port = {api_port}"]
    lines += [f'tls_cert = "{api_tls.cert}"', f'tls_key = "{api_tls.key}"'] if api_tls else ["plaintext = true"]
    lines += [f"{key} = {value}" for key, value in (api_limits or {}).items()]
    lines += [f'operator_token_file = "{operator_token_file}"'] if operator_token_file else []
    lines += ["[metrics]", 'host = "127.0.0.1"', f"port = {metrics_port}"] if metrics_port else []
    for node in nodes.values():
        lines += [f"[nodes.{node.name}]", f'token = "{node.token}"']
        lines += [f"dpid = {node.dpid}"] if node.dpid is not None else []
        lines += [f"port = {node.port}"] if node.port is not None else []
    names = switch_names or {}
    for dpid in {**trusted, **names}:
        lines += [f'[switches."{dpid}"]', *([f'name = "{names[dpid]}"'] if dpid in names else [])]
        lines += [f"trusted_ports = {list(trusted[dpid])}"] if dpid in trusted else []
    for a, b in links:
        lines += ["[[links]]", f'a = "{a}"', f'b = "{b}"']
    lines += ["[pools.default]", f'subnet = "{pool.subnet}"', f"ranges = {json.dumps(list(pool.ranges))}"]
    lines += [f'gateway = "{pool.gateway}"'] if pool.gateway else []
    lines += [f'subnet6 = "{pool.subnet6}"', f"ranges6 = {json.dumps(list(pool.ranges6))}"] if pool.subnet6 else []
    lines += [f'gateway6 = "{pool.gateway6}"'] if pool.gateway6 else []
    lines += ["routes = [" + ", ".join(f'{{dst = "{dst}", gw = "{gw}"}}' for dst, gw in pool.routes) + "]"
              ] if pool.routes else []
    lines += ["[kubernetes]", f'kubeconfig = "{kubeconfig}"'] if kubeconfig else []
    lines += [f"{key} = {json.dumps(value)}" for key, value in (election or {}).items()] if kubeconfig else []
    return "\n".join(lines) + "\n"


class ControllerDied(RuntimeError):
    """The controller process ended while we waited for it (bad config, port in use)."""


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('error', body)}")
        self.status, self.body = status, body


@dataclass
class Controller:
    """One controller process: its config, store, pid and log live in `workdir`."""

    workdir: Path
    ns: str
    nodes: dict[str, NodeSpec]
    trusted: dict[int, tuple[int, ...]]
    pool: PoolSpec
    openflow_port: int = 6653
    api_port: int = 6680
    api_host: str = "127.0.0.1"  # in the management namespace; a segment address when nodes are remote
    resync_grace: float = 60  # seconds a fresh allocation is safe from an agent's full sync
    verbose: bool = True
    kubeconfig: Path | None = None  # set: the store is the Kubernetes API this kubeconfig reaches
    tls: bool = True  # the API over TLS with the controller's own CA; False: plain HTTP (loopback only)
    api_limits: dict[str, float] = field(default_factory=dict)  # [api] limits (controller/config.py)
    election: dict[str, Any] = field(default_factory=dict)  # [kubernetes] election keys, with kubeconfig
    identity: str | None = None  # the replica's name in the Lease (its POD_NAME)
    metrics_port: int | None = None  # Prometheus metrics on 127.0.0.1 in `ns` ([metrics]); None: none
    audit_interval: float | None = None  # [openflow] audit_interval; None: the controller's default
    switch_names: dict[int, str] = field(default_factory=dict)  # a fabric's switches, by dpid
    links: tuple[tuple[str, str], ...] = ()  # a fabric's cables, "dpid:port" at each end

    @property
    def pidfile(self) -> Path:
        return self.workdir / "controller.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "controller.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "controller.toml"

    @property
    def ca_file(self) -> Path | None:
        """The CA the API's certificate comes from: what its clients trust (None without TLS)."""
        return self.workdir / "pki" / "ca.pem" if self.tls else None

    @property
    def operator_token_file(self) -> Path:
        """The operators' read-only token (underlayctl's), made with the config."""
        return self.workdir / "operator.token"

    @property
    def operator_token(self) -> str:
        return self.operator_token_file.read_text().strip()

    def write_config(self) -> None:
        """The config, and with TLS a new CA and server certificate for `api_host`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.operator_token_file.exists():
            self.operator_token_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.operator_token_file.chmod(0o600)
        api_tls = pki.server_files(self.workdir / "pki", ip=self.api_host) if self.tls else None
        self.config_path.write_text(render_config(
            store=self.workdir / "store.sqlite", nodes=self.nodes, trusted=self.trusted, pool=self.pool,
            openflow_port=self.openflow_port, api_port=self.api_port, api_host=self.api_host,
            api_tls=api_tls, api_limits=self.api_limits, resync_grace=self.resync_grace, kubeconfig=self.kubeconfig,
            election=self.election, operator_token_file=self.operator_token_file, metrics_port=self.metrics_port,
            audit_interval=self.audit_interval, switch_names=self.switch_names, links=self.links))
        self.config_path.chmod(0o600)  # it holds the node tokens

    def start(self, *, timeout: float = 20) -> None:
        if not self.config_path.exists():
            self.write_config()
        argv = [sys.executable, "-m", "controller.main", "--config", str(self.config_path)]
        env = {**os.environ, "POD_NAME": self.identity} if self.identity else None
        start_daemon(argv + (["-v"] if self.verbose else []), pidfile=self.pidfile, logfile=self.logfile,
                     ns=self.ns, env=env)
        self.wait_healthy(timeout=timeout)

    def stop(self, *, kill: bool = False) -> None:
        stop_pidfile(self.pidfile, sig=signal.SIGKILL if kill else signal.SIGTERM)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def wait_healthy(self, *, timeout: float, switches: int = 0) -> dict[str, Any]:
        """Wait until the API answers (and `switches` switches are connected)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise ControllerDied(f"the controller exited: {self.last_log_line()} (log: {self.logfile})")
            try:
                health = self.health()
                if len(health.get("connected", ())) >= switches:  # a follower's lists none
                    return health
            except (OSError, ApiError) as err:
                last = err
            time.sleep(0.05)
        raise TimeoutError(f"controller not healthy within {timeout:g}s ({last}); log: {self.logfile}")

    def running(self) -> bool:
        try:
            pid = int(self.pidfile.read_text())
            return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False

    def last_log_line(self) -> str:
        lines = self.logfile.read_text().strip().splitlines() if self.logfile.exists() else []
        return lines[-1] if lines else "no output"

    def request(self, method: str, path: str, body: Any = None, *, node: str | None = None,
                token: str | None = None) -> dict[str, Any]:
        """One REST call, authenticated as `node` (or with `token`); raises ApiError on non-2xx."""
        token = token or (self.nodes[node].token if node else None)
        status, answer = self.raw_request(method, path, body, token=token)
        if status >= 300:
            raise ApiError(status, answer)
        return answer

    def health(self) -> dict[str, Any]:
        """`GET /v1/health` with a node's token: the full answer (switches, counters)."""
        return self.request("GET", "/v1/health", node=next(iter(self.nodes)))

    def ready(self) -> bool:
        """`GET /v1/ready` (no token): True on the leader, or when there is no election."""
        return self.raw_request("GET", "/v1/ready")[0] == 200

    def raw_request(self, method: str, path: str, body: Any = None, *,
                    token: str | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.api_host, self.api_port, timeout=30)
        conn.sock = self.connect()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def connect(self, *, timeout: float = 30) -> socket.socket:
        """A connection to the API from inside the management namespace, TLS checked with `ca_file`."""
        sock = netns.connect_tcp(self.ns, self.api_host, self.api_port, timeout=timeout)
        if self.ca_file is None:
            return sock
        try:
            return ssl.create_default_context(cafile=str(self.ca_file)).wrap_socket(sock, server_hostname=self.api_host)
        except BaseException:
            sock.close()
            raise

    @property
    def url(self) -> str:
        """The API as seen from inside the management namespace (where agents run in the lab)."""
        return f"{'https' if self.tls else 'http'}://{self.api_host}:{self.api_port}"

    def agent_args(self) -> list[str]:
        """`underlay-agent` flags that point it at this controller (its token file is the caller's)."""
        return ["--controller-url", self.url, *(["--ca-file", str(self.ca_file)] if self.ca_file else [])]
