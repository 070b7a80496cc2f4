"""Fixtures shared by tests/cni and tests/node_agent: nodes with a running agent, pods, the plugin.

A node is a rig host (a namespace whose `eth0` is cabled to the test's private OVS); its agent runs
as a real `underlay-agent` process (in the test's namespace, operating on the node's through
`--netns`) with its socket and state in the test's tmp dir. The plugin is installed by
`cni.install` into a tmp bin dir and executed exactly as a runtime does: env + stdin, inside the
node's namespace. The controller is `ControllerDouble` until the real one runs as a process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni import install
from deploy.lab import netns as lab_netns
from deploy.lab.rig import Host, Rig

sys.path.insert(0, str(Path(__file__).parent))
from controller_double import ControllerDouble  # noqa: E402

SUBNET = "198.18.5.0/24"
REFERENCE_PLUGINS = Path("/usr/lib/cni")
AGENT = Path(sys.executable).parent / "underlay-agent"


@dataclass
class CniCall:
    """One execution of the plugin: its exit status and its parsed stdout."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout) if self.stdout.strip() else {}


@dataclass
class Node:
    host: Host
    socket: Path
    process: subprocess.Popen
    log: Path
    bin_dir: Path

    @property
    def name(self) -> str:
        return self.host.name

    def conf(self, version: str = "1.1.0", **extra: object) -> dict:
        """Our plugin's network configuration, talking to this node's agent."""
        return {"cniVersion": version, "name": "underlay", "type": "underlay", "master": "eth0",
                "agentSocket": str(self.socket), **extra}

    def cni(self, command: str, config: dict | bytes | None, *, container_id: str = "", netns: str = "",
            ifname: str = "eth0", args: str = "", plugin: str = "underlay", env: dict | None = None) -> CniCall:
        """Run a plugin the way a runtime does, inside this node's namespace."""
        return run_plugin(self.bin_dir / plugin if "/" not in plugin else Path(plugin), command, config,
                          node_ns=self.host.netns, container_id=container_id, netns=netns, ifname=ifname,
                          args=args, bin_dir=self.bin_dir, env=env)


def run_plugin(path: Path, command: str, config: dict | bytes | None, *, node_ns: str | None, container_id: str,
               netns: str, ifname: str, args: str, bin_dir: Path, env: dict | None = None) -> CniCall:
    environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args,
               "CNI_PATH": f"{bin_dir}:{REFERENCE_PLUGINS}"}
    environ = {k: v for k, v in environ.items() if v}
    environ.update(env or {})
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode() if config is not None else b""
    argv = lab_netns.exec_argv(node_ns, [str(path)]) if node_ns else [str(path)]
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=environ, timeout=60)
    return CniCall(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir with our plugin installed as a runtime finds it, plus links to the reference plugins."""
    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install.install_binary(bin_dir)
    for name in ("macvlan", "host-local", "tuning", "portmap"):
        (bin_dir / name).symlink_to(REFERENCE_PLUGINS / name)
    return bin_dir


@pytest.fixture
def controller() -> Iterator[ControllerDouble]:
    double = ControllerDouble(subnet=SUBNET, tokens={}).start()
    yield double
    double.stop()


@pytest.fixture
def make_node(rig: Rig, make_host: Callable[..., Host], controller: ControllerDouble, cni_bin: Path,
              tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Factory: make_node("n1") makes a node namespace cabled to the bridge and starts its agent."""
    nodes: list[Node] = []

    def make(name: str, *, host_octet: int | None = None, standalone: bool = False, **flags: str) -> Node:
        octet = host_octet or 10 + len(nodes)
        host = make_host(name, cidr=f"198.18.5.{octet}/24")
        token = secrets.token_hex(8)
        controller.tokens[name] = token
        (tmp_path / f"{name}.token").write_text(token)
        sock = tmp_path / f"{name}.sock"
        argv = [str(AGENT), "--node", name, "--socket", str(sock), "--netns", host.netns, "--master", "eth0",
                "--state-dir", str(tmp_path / f"{name}-state"), "--resync-interval", "3600"]
        if not standalone:
            argv += ["--controller-url", controller.url, "--token-file", str(tmp_path / f"{name}.token")]
        for key, value in flags.items():
            argv += [f"--{key.replace('_', '-')}", value]
        node = start_agent(rig, name, argv, sock, tmp_path, host, cni_bin)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        stop_agent(node.process)


def start_agent(rig: Rig, name: str, argv: list[str], sock: Path, tmp_path: Path, host: Host,
                bin_dir: Path) -> Node:
    log = tmp_path / f"{name}-agent.log"
    process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    pid_dir = rig.workdir / "agents"  # the rig's destroy() stops what it finds here, also after a crash
    pid_dir.mkdir(exist_ok=True)
    (pid_dir / f"{name}-{process.pid}.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 15
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_agent(process)
            pytest.fail(f"agent {name} did not start:\n{log.read_text()}", pytrace=False)
        time.sleep(0.02)
    return Node(host=host, socket=sock, process=process, log=log, bin_dir=bin_dir)


def stop_agent(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Pods:
    """Pod namespaces made by a test; all removed at its end."""

    prefix: str
    made: list[str] = field(default_factory=list)

    def make(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        lab_netns.create(ns)
        self.made.append(ns)
        return f"/run/netns/{ns}"


@pytest.fixture
def pods(rig: Rig) -> Iterator[Pods]:
    made = Pods(rig.prefix)
    yield made
    for ns in made.made:
        lab_netns.remove(ns)


def ns_of(path: str) -> str:
    return os.path.basename(path)


def links_in(ns: str) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        return sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
