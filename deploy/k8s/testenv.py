"""A real Kubernetes control plane on loopback for tests and the lab: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, in one private directory.

Everything of one control plane lives in its directory: credentials (an admin bearer token in a static
token file, a service-account signing key; the apiserver makes its own serving certificate in
`certs/`), etcd's data, one log and one pidfile per process, and `kubeconfig`. So a control plane can
be stopped by another process than the one that started it (`underlay-lab down`) with
`ControlPlane(directory).stop()`.

Why each piece (see issue 11 for how they were found):
- etcd is Debian's 3.4: it lacks the progress request the apiserver uses to serve a watch without a
  resource version from its cache, which then fails with `504 Too large resource version` unless etcd
  sends periodic progress notifications (`--experimental-watch-progress-notify-interval`; a shorter
  interval is a shorter wait for a new watch's first event, and more idle CPU).
- kube-controller-manager: without it no namespace gets its `default` ServiceAccount (so Pods are
  refused), no StatefulSet makes pods, no garbage collector deletes dependents. kube-scheduler binds
  pods to nodes. Both use the admin kubeconfig, no leader election and serve no HTTPS of their own.
- `--endpoint-reconciler-type=none`: on 127.0.0.1 the apiserver otherwise logs an endpoint error every
  10 s.
- Ports are free loopback ports picked at start; one taken in between (another test session) makes a
  process exit with "address already in use", and the whole start is tried again on new ports.

A test session's processes die with it (PR_SET_PDEATHSIG), even when pytest is SIGKILLed; a directory
left behind that way is removed by the next `ControlPlane.temporary()` (its `owner` is dead).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.k8s import build
from deploy.lab.process import start_daemon, stop_pidfile

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
PROCESSES = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)  # start order; stopped in reverse
KUBE_BINARIES = PROCESSES[1:]
SERVICE_CIDR = "192.0.2.0/24"  # TEST-NET-1: Service ClusterIPs are only allocated, never routed here
TEMP_PREFIX = "underlay-k8s-"
# etcd's progress notifications (see the module docstring): the longest wait of a new watch without a
# resource version for its first event, against idle CPU of etcd + apiserver (measured: 10m 1.8 % of
# a core but such watches fail, 1s 6.9 %, 250ms 14.3 %). Tests want short waits; the lab sits idle.
PROGRESS_NOTIFY = "250ms"
PORT_RETRIES = 3


class MissingBinary(RuntimeError):
    """A binary the control plane needs is not on this machine; the message names the command that
    builds or installs it."""


class StartFailed(RuntimeError):
    """A process of the control plane exited or the apiserver did not get ready; the message carries
    the end of its log."""


def find_binaries(*, environ: Mapping[str, str] = os.environ) -> dict[str, Path]:
    """Path of each process's binary, or MissingBinary naming what to run to get them."""
    etcd = shutil.which(ETCD, path=environ.get("PATH", os.defpath))
    if etcd is None:
        raise MissingBinary("etcd is not installed: run `make setup` (or `apt-get install etcd-server`)")
    paths = {ETCD: Path(etcd)}
    for name in KUBE_BINARIES:
        paths[name] = build.binary_path(name, environ=environ)
    missing = [name for name in KUBE_BINARIES if not paths[name].exists()]
    if missing:
        raise MissingBinary(f"{', '.join(missing)} not built in {paths[missing[0]].parent}: run `make k8s` "
                            f"(or `{build.BUILD_COMMAND} {' '.join(missing)}`)")
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ControlPlane:
    """One control plane in `directory`. `detached` ones (the lab) outlive the process that started
    them; the others die with it."""

    directory: Path
    detached: bool = False
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    progress_notify: str = PROGRESS_NOTIFY
    ready_seconds: float | None = None  # from the first process started to a ready apiserver

    @classmethod
    def temporary(cls, **options: object) -> ControlPlane:
        """A control plane in a new private directory (tmpfs when there is one: etcd fsyncs every
        write), after removing those whose owner died."""
        root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
        sweep_stale(root)
        directory = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
        (directory / "owner").write_text(str(os.getpid()))
        return cls(directory, **options)  # type: ignore[arg-type]

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return str(self._read_state()["server"])

    def start(self, *, timeout: float = 90) -> ControlPlane:
        """Start every process and wait for the apiserver's /readyz; on any failure stop what was
        started and raise."""
        binaries = find_binaries()
        for attempt in range(1, PORT_RETRIES + 1):
            try:
                return self._start_once(binaries, timeout=timeout)
            except StartFailed as failure:
                self.stop(remove=False)
                if "address already in use" not in str(failure) or attempt == PORT_RETRIES:
                    raise
            except BaseException:
                self.stop(remove=False)
                raise
        raise AssertionError("unreachable")

    def stop(self, *, remove: bool = True) -> None:
        """Stop every process (reverse start order, SIGKILL after 10 s) and, if `remove`, delete the
        directory. Safe twice and from another process."""
        for name in reversed(PROCESSES):
            stop_pidfile(self.directory / f"{name}.pid", timeout=10)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        found = {}
        for name in PROCESSES:
            try:
                found[name] = int((self.directory / f"{name}.pid").read_text())
            except (FileNotFoundError, ValueError):
                continue
        return found

    def rss(self) -> dict[str, int]:
        """Resident memory of each running process in bytes (VmRSS)."""
        sizes = {}
        for name, pid in self.pids().items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            sizes[name] = int(kib) * 1024
        return sizes

    def token(self) -> str:
        return (self.directory / "admin.token").read_text().strip()

    # --- starting ---------------------------------------------------------------------------------

    def _start_once(self, binaries: Mapping[str, Path], *, timeout: float) -> ControlPlane:
        ports = {"etcd": free_port(), "etcd-peer": free_port(), "apiserver": free_port()}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        self._write_credentials()
        self._write_state({"server": server, "ports": ports})
        started = time.monotonic()
        argvs = {ETCD: self._etcd_argv(ports), APISERVER: self._apiserver_argv(ports),
                 CONTROLLER_MANAGER: self._controller_manager_argv(), SCHEDULER: self._scheduler_argv()}
        for name in (ETCD, APISERVER):
            self._spawn(name, [str(binaries[name]), *argvs[name], *self.extra_args.get(name, ())])
        ca_file = self._wait_ready(server, deadline=started + timeout)
        self.ready_seconds = time.monotonic() - started
        self._write_kubeconfig(server, ca_file)
        for name in (CONTROLLER_MANAGER, SCHEDULER):  # they need the kubeconfig, so the apiserver first
            self._spawn(name, [str(binaries[name]), *argvs[name], *self.extra_args.get(name, ())])
        self._check_running()
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        start_daemon(argv, pidfile=self.directory / f"{name}.pid", logfile=self.directory / f"{name}.log",
                     die_with_parent=not self.detached)

    def _etcd_argv(self, ports: Mapping[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return ["--name=underlay", f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=underlay={peer}", "--log-level=warn", "--logger=zap",
                f"--experimental-watch-progress-notify-interval={self.progress_notify}"]

    def _apiserver_argv(self, ports: Mapping[str, int]) -> list[str]:
        d = self.directory
        return [f"--etcd-servers=http://127.0.0.1:{ports['etcd']}", f"--cert-dir={d / 'certs'}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
                f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
                f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
                "--allow-privileged=true", "--profiling=false"]

    def _controller_manager_argv(self) -> list[str]:
        d = self.directory
        return [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0",
                f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'certs' / 'apiserver.crt'}",
                "--profiling=false"]

    def _scheduler_argv(self) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0", "--profiling=false"]

    def _wait_ready(self, server: str, *, deadline: float) -> Path:
        """Poll /readyz until it answers 200; return the apiserver's self-made CA bundle.

        Its serving certificate is made at start, so the poll cannot verify it yet; the kubeconfig
        written afterwards does."""
        unverified = ssl._create_unverified_context()  # our own process on loopback, see above
        request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {self.token()}"})
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(request, context=unverified, timeout=2) as reply:
                    if reply.status == 200:
                        return self.directory / "certs" / "apiserver.crt"
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}: {error.read().decode(errors='replace')[-400:]}"
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.05)
        raise StartFailed(f"kube-apiserver at {server} not ready in time ({last}); "
                          f"log {self.directory / 'kube-apiserver.log'}:\n{self._log_tail(APISERVER)}")

    def _check_running(self) -> None:
        for name, pid in self.pids().items():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                state = "gone"
            if state in ("Z", "gone"):
                raise StartFailed(f"{name} exited; end of {self.directory / (name + '.log')}:\n{self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.directory / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- files ------------------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        """An admin token (group system:masters) and an ECDSA service-account key pair, once per
        directory: a restart on other ports keeps them."""
        if (self.directory / "tokens.csv").exists():
            return
        token = secrets.token_urlsafe(32)
        _write_private(self.directory / "admin.token", token + "\n")
        _write_private(self.directory / "tokens.csv", f'{token},admin,admin,"system:masters"\n')
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(self.directory / "sa.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
        (self.directory / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _write_kubeconfig(self, server: str, ca_file: Path) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "underlay",
            "clusters": [{"name": "underlay", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
            "users": [{"name": "admin", "user": {"token": self.token()}}],
            "contexts": [{"name": "underlay", "context": {"cluster": "underlay", "user": "admin"}}],
        }
        _write_private(self.kubeconfig, yaml.safe_dump(config, sort_keys=False))

    def _write_state(self, state: Mapping[str, object]) -> None:
        (self.directory / "state.json").write_text(json.dumps(state))

    def _read_state(self) -> dict[str, object]:
        return dict(json.loads((self.directory / "state.json").read_text()))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def sweep_stale(root: Path) -> None:
    """Remove the temporary control planes under `root` whose owning process is gone."""
    for owner in root.glob(f"{TEMP_PREFIX}*/owner"):
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            ControlPlane(owner.parent).stop()

