"""Fixtures shared by tests/cni and tests/node_agent: a segment with the real controller, nodes with
a running agent, pods, the plugin.

The segment is this test's bridge with two node hosts (`n1`, `n2`) and an external host already
cabled to it, and a real `underlay-controller` process (`deploy.lab.control.Controller`) in the rig's
management namespace, pinning each node to its port and trusting the external host's: its flows
carry every frame, as in the lab. A node's agent is a real `underlay-agent` process in that
namespace too (so it reaches the controller at 127.0.0.1), operating on the node's namespace
through `--netns`, with its socket and state in the test's tmp dir. The plugin is installed by
`cni.install` into a tmp bin dir and executed exactly as a runtime does: env + stdin, inside the
node's namespace.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni import install
from deploy.lab import netns as lab_netns
from deploy.lab import runtime
from deploy.lab.runtime import PluginCall
from deploy.lab.control import ApiError, Controller, NodeSpec, PoolSpec
from deploy.lab.rig import Host, Rig

SUBNET = "198.18.5.0/24"
POD_RANGE = "198.18.5.100-198.18.5.199"
FIRST_POD_IP = "198.18.5.100"
NODES = {"n1": "198.18.5.11", "n2": "198.18.5.12"}
EXTERNAL_IP = "198.18.5.200"
REFERENCE_PLUGINS = runtime.REFERENCE_PLUGINS
AGENT = Path(sys.executable).parent / "underlay-agent"


CniCall = PluginCall  # one execution of a plugin: exit status, stdout, stderr, `.json`


@dataclass
class Node:
    host: Host
    socket: Path
    argv: list[str]
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
    return runtime.run_plugin(path, command, b"" if config is None else config, env=environ, node_ns=node_ns)


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir with our plugin installed as a runtime finds it, plus links to the reference plugins."""
    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install.install_binary(bin_dir)
    for name in ("macvlan", "host-local", "tuning", "portmap"):
        (bin_dir / name).symlink_to(REFERENCE_PLUGINS / name)
    return bin_dir


@dataclass
class Segment:
    """This test's switch as the controller sees it: node hosts on pinned ports, an external host."""

    rig: Rig
    bridge: str
    controller: Controller
    hosts: dict[str, Host]
    external: Host

    def allocations(self, node: str) -> dict[tuple[str, str], dict]:
        """The controller's pods of `node` by (container, ifname); none for an unregistered node."""
        try:
            pods = self.controller.request("GET", f"/v1/nodes/{node}/pods", node=node)["pods"]
        except ApiError as err:
            if err.status != 404:
                raise
            return {}
        return {(p["container_id"], p["ifname"]): p for p in pods}

    def health(self) -> dict:
        return self.controller.health()

    def disconnect_switch(self) -> None:
        """Take the switch away from the controller (its flows stay: fail_mode=secure)."""
        self.rig.ovs.vsctl("del-controller", self.bridge)
        wait_for(lambda: not self.health()["connected"], what="the controller to see the switch go")

    def wait_synced(self, node: str, want: set[tuple[str, str]], *, timeout: float = 10) -> None:
        wait_for(lambda: set(self.allocations(node)) == want, timeout=timeout,
                 what=f"the controller to hold exactly {sorted(want)} for {node}")


@pytest.fixture
def segment(rig: Rig, bridge: str, make_host: Callable[..., Host]) -> Iterator[Segment]:
    """The nodes and the external host are cabled first, so the controller can pin their ports."""
    yield from run_segment(rig, bridge, make_host, pinned=True)


def run_segment(rig: Rig, bridge: str, make_host: Callable[..., Host], *, pinned: bool,
                pool: PoolSpec = PoolSpec(SUBNET, ranges=(POD_RANGE,)),
                pools: dict[str, PoolSpec] | None = None) -> Iterator[Segment]:
    """The segment's life; `pinned=False` leaves the controller to learn the nodes' ports from
    their first frames (the external host's port is trusted either way); `pools` beside `pool`."""
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    hosts = {name: make_host(name, cidr=f"{ip}/24") for name, ip in NODES.items()}
    external = make_host("ext", cidr=f"{EXTERNAL_IP}/24")
    dpid = int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)
    controller = Controller(
        workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns,
        nodes={name: NodeSpec(name, dpid=dpid, port=host.ofport) if pinned else NodeSpec(name)
               for name, host in hosts.items()},
        trusted={dpid: (external.ofport,)}, pool=pool, pools=pools or {},
        resync_grace=0)  # no grace for fresh allocations: tests check that a sync releases at once
    controller.start()
    try:
        controller.wait_healthy(timeout=15, switches=1)
        yield Segment(rig=rig, bridge=bridge, controller=controller, hosts=hosts, external=external)
    finally:
        controller.stop()


@pytest.fixture
def make_node(request: pytest.FixtureRequest, rig: Rig, make_host: Callable[..., Host], cni_bin: Path,
              tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Factory: make_node("n1") starts the agent of segment node n1 (the segment starts on first use);
    make_node("n1", standalone=True) cables a node of its own whose agent has no controller."""
    nodes: list[Node] = []

    def make(name: str, *, standalone: bool = False, **flags: str) -> Node:
        sock = tmp_path / f"{name}.sock"
        argv = [str(AGENT), "--node", name, "--socket", str(sock), "--master", "eth0",
                "--state-dir", str(tmp_path / f"{name}-state"), "--resync-interval", "3600"]
        if standalone:
            host = make_host(name, cidr=f"{NODES.get(name, '198.18.5.13')}/24")
        else:
            segment: Segment = request.getfixturevalue("segment")
            host = segment.hosts[name]
            token = tmp_path / f"{name}.token"
            token.write_text(segment.controller.nodes[name].token)
            argv += [*segment.controller.agent_args(), "--token-file", str(token)]
        argv += ["--netns", host.netns]
        for key, value in flags.items():
            argv += [f"--{key.replace('_', '-')}", value]
        node = start_agent(rig, argv, host=host, socket=sock, log=tmp_path / f"{name}-agent.log", bin_dir=cni_bin)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        stop_agent(node.process)


def start_agent(rig: Rig, argv: list[str], *, host: Host, socket: Path, log: Path, bin_dir: Path) -> Node:
    """The agent in the rig's management namespace, where the controller listens on 127.0.0.1."""
    socket.unlink(missing_ok=True)
    process = subprocess.Popen(lab_netns.exec_argv(rig.mgmt_ns, argv), stdout=log.open("a"),
                               stderr=subprocess.STDOUT)
    pid_dir = rig.workdir / "agents"  # the rig's destroy() stops what it finds here, also after a crash
    pid_dir.mkdir(exist_ok=True)
    (pid_dir / f"{host.name}-{process.pid}.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 15
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_agent(process)
            pytest.fail(f"agent {host.name} did not start:\n{log.read_text()}", pytrace=False)
        time.sleep(0.02)
    return Node(host=host, socket=socket, argv=argv, process=process, log=log, bin_dir=bin_dir)


def stop_agent(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(probe: Callable[[], object], *, what: str, timeout: float = 10) -> None:
    """Poll `probe` until it is true: the condition a test waits on, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


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
    return path.rsplit("/", 1)[-1]


def links_in(ns: str) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        return sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
