"""The one-machine lab: a switch, a controller, nodes with agents, pods made through the real CNI
plugin, and an external "bare-metal" host that reaches pod IPs directly.

Everything a lab is lives under one state directory (default /run/underlay-lab): the rig (private
Open vSwitch, namespaces), the controller's config and store, each node's agent socket, state and
CNI config, and `lab.json`, the lab's description, which every command reads. Namespaces are named
`<prefix>-<name>`, the prefix derived from the state directory so two labs never collide.

Commands run at once (twenty `pod add` from a shell loop): each change of `lab.json` is a locked
read-modify-write (`deploy.lab.statefile`), and a pod name is held by one command at a time from
its check to its write, the CNI call included, so two commands never make the same pod.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cni import install
from deploy.k8s.testenv import SERVICE_CIDR
from deploy.lab import fabric as labfabric
from deploy.lab import frames, incluster, labmetrics, netns, rig, statefile, topology, transfer, umlnode
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.kubelab import KubeSide, controller_store
from deploy.lab.process import start_daemon, stop_pidfile, wait_until
from deploy.lab.runtime import REFERENCE_PLUGINS, Attachment, Execute, in_namespace, run_chain
from deploy.lab.umlnode import UmlNode
from deploy.uml.instance import MissingUml, find_kernel
from openflow.model import link_local

DEFAULT_STATE_DIR = Path("/run/underlay-lab")
SUBNET = "198.18.0.0/24"
POD_RANGE = "198.18.0.100-198.18.0.199"
CONTROLLER_IP = "198.18.0.1"  # the controller's API on the segment, for agents inside UML nodes
EXTERNAL_IP = "198.18.0.2"
# --dual-stack: a ULA prefix, inside the lab's own namespaces only; addresses spell their IPv4 twins' last octet
SUBNET6 = "fd00:18::/64"
POD_RANGE6 = "fd00:18::100-fd00:18::199"
GATEWAY6 = "fd00:18::1"  # the pool's: pods then take no router advertisements (accept_ra 0)
EXTERNAL_IP6 = "fd00:18::2"
OPENFLOW_PORT, API_PORT = 6653, 6680
MODES = ("macvlan", "ipvlan")
NODE_BOOT_TIMEOUT = 120


class LabError(RuntimeError):
    """Something a user can fix; the message says what."""


@dataclass
class NodeInfo:
    name: str
    netns: str
    ip: str
    mac: str
    port: int
    cni_conf: str
    agent_socket: str
    spool: str = ""  # a User-Mode Linux node's command channel; "" for a namespace node (netns is then "")
    ip6: str = ""  # with --dual-stack


@dataclass
class PodInfo:
    name: str
    netns: str
    node: str
    ip: str
    mac: str
    container_id: str
    result: dict[str, Any] = field(default_factory=dict)
    ip6: str = ""  # with --dual-stack


@dataclass
class LabState:
    prefix: str
    mode: str
    bridge: str
    dpid: int
    external: dict[str, Any]
    api_host: str = "127.0.0.1"  # where the controller's API listens, in the management namespace
    controller_port: int | None = None  # its switch port (trusted) when the API is on the segment
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pods: dict[str, PodInfo] = field(default_factory=dict)  # without Kubernetes; with it, see Lab.pods
    kubernetes: dict[str, str] = field(default_factory=dict)  # kubeconfig and store, with --kubernetes
    dual_stack: bool = False  # every pod gets an IPv6 address too (SUBNET6)
    topology: str = topology.SINGLE  # --topology (deploy/lab/topology.py); bridge and dpid are the external host's
    switch_of: dict[str, str] = field(default_factory=dict)  # node (and "external") → its switch, on a fabric

    @classmethod
    def load(cls, path: Path) -> LabState:
        data = json.loads(path.read_text())
        data["nodes"] = {k: NodeInfo(**v) for k, v in data["nodes"].items()}
        data["pods"] = {k: PodInfo(**v) for k, v in data["pods"].items()}
        return cls(**data)

    def save(self, path: Path) -> None:
        statefile.write_atomically(path, asdict(self))


Progress = Callable[[str], None]


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class Lab:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, *, progress: Progress = say) -> None:
        self.state_dir = state_dir
        self.prefix = "ul" + hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:4]
        self.rig = rig.Rig(prefix=self.prefix, state_root=state_dir)
        self.workdir = self.rig.workdir
        self.state_file = self.workdir / "lab.json"
        self.progress = progress

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> LabState:
        if not self.state_file.exists():
            raise LabError(f"no lab is running under {self.state_dir}: run `underlay-lab up`")
        return LabState.load(self.state_file)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[LabState]:
        """The lab's state, read under its lock and written back when the body succeeds."""
        with statefile.locked(self.workdir / "lab.lock"):
            state = self.state
            yield state
            state.save(self.state_file)

    @contextlib.contextmanager
    def _holding_pod(self, name: str) -> Iterator[None]:
        """Pod `name` is this command's until the body ends (its ADD or DEL and the state's write)."""
        locks = self.workdir / "locks"
        locks.mkdir(exist_ok=True)
        with statefile.locked(locks / f"pod-{name}.lock"):
            yield

    def controller(self, state: LabState | None = None) -> Controller:
        state = state or self.state
        if state.kubernetes.get("in_cluster"):
            raise LabError("this lab's controller runs as pods (--in-cluster): "
                           f"kubectl -n {incluster.NAMESPACE} get pods, or its logs under each node's kubelet/pod-logs")
        tokens = json.loads((self.workdir / "tokens.json").read_text())
        fabric = topology.parse(state.topology)
        dpid_of = {name: fabric.switch(switch).dpid for name, switch in state.switch_of.items()}
        return Controller(
            workdir=self.workdir / "controller", ns=self.rig.mgmt_ns,
            nodes={n.name: NodeSpec(n.name, dpid=dpid_of.get(n.name, state.dpid), port=n.port, token=tokens[n.name])
                   for n in state.nodes.values()},
            switch_names={} if fabric.single else {s.dpid: s.name for s in fabric.switches},
            links=tuple(fabric.config_links()),
            trusted={state.dpid: (state.external["port"],
                                  *((state.controller_port,) if state.controller_port else ()))},
            pool=lab_pool(dual_stack=state.dual_stack), openflow_port=OPENFLOW_PORT, api_port=API_PORT,
            api_host=state.api_host, kubeconfig=Path(state.kubernetes["kubeconfig"])
            if state.kubernetes.get("store") == "kubernetes" else None, metrics_port=labmetrics.CONTROLLER_PORT)

    # -- up / down ---------------------------------------------------------------------------
    def up(self, *, nodes: int = 2, pods_per_node: int = 2, mode: str = "macvlan",
           kubernetes: bool = False, dual_stack: bool = False, kubelet: int = 0,
           images: Sequence[Path] = (), in_cluster: bool = False, audit_interval: float | None = None,
           topology_spec: str = topology.SINGLE) -> LabState:
        try:
            fabric = topology.parse(topology_spec)
        except topology.TopologyError as err:
            raise LabError(str(err)) from None
        if in_cluster and not fabric.single:
            raise LabError(f"--topology {topology_spec} with --in-cluster: the in-cluster overlay pins one switch")
        if mode not in MODES:
            raise LabError(f"--mode {mode}: one of {', '.join(MODES)}")
        if dual_stack and kubernetes:
            raise LabError("--dual-stack with --kubernetes: the lab's IPPool and kubelet stand-ins are IPv4 only; "
                           "use --dual-stack without --kubernetes")
        if kubelet and not kubernetes:
            raise LabError("--kubelet runs a real kubelet against the lab's control plane: add --kubernetes")
        if not 0 <= kubelet <= nodes:
            raise LabError(f"--kubelet {kubelet}: real nodes are some of the {nodes} nodes (--nodes)")
        if in_cluster and nodes != incluster.NODES:
            raise LabError(f"--in-cluster: --nodes {incluster.NODES} (deploy/lab/overlay pins node1 and node2's switch ports)")
        if in_cluster and not (kubernetes and kubelet == nodes):
            raise LabError("--in-cluster runs underlay's own manifests on real kubelets, which every node must be "
                           f"(agents prove their node with a kubelet-mounted token): add --kubernetes --kubelet {nodes}")
        rig.check_prerequisites()
        in_uml = mode == "ipvlan" and not kernel_has_ipvlan()
        if kubernetes and in_uml:
            raise LabError("--kubernetes runs its kubelet stand-ins beside namespace nodes; this kernel has "
                           "no ipvlan, so --mode ipvlan nodes are User-Mode Linux instances: use --mode macvlan")
        if in_uml:
            try:
                find_kernel()
            except MissingUml as missing:
                raise LabError(f"--mode ipvlan: this kernel has no ipvlan (CONFIG_IPVLAN), so each node is a "
                               f"User-Mode Linux instance, and {missing}") from None
        if self.workdir.exists():
            self.progress(f"removing the previous lab under {self.workdir}")
            self.down()
        self.progress("starting a private Open vSwitch (userspace datapath, fail_mode=secure)")
        self.rig.start(persistent=True)
        try:
            if in_cluster:
                return self._build_in_cluster(nodes=nodes, pods_per_node=pods_per_node, images=images)
            return self._build(nodes=nodes, pods_per_node=pods_per_node, mode=mode, in_uml=in_uml,
                               kubernetes=kubernetes, dual_stack=dual_stack, kubelet=kubelet, images=images,
                               audit_interval=audit_interval, fabric=fabric)
        except BaseException:
            self.progress("failed: removing what was built")
            self.down()
            raise

    def _build(self, *, nodes: int, pods_per_node: int, mode: str, in_uml: bool, kubernetes: bool,
               dual_stack: bool, kubelet: int, images: Sequence[Path], audit_interval: float | None,
               fabric: topology.Fabric) -> LabState:
        if not fabric.single:
            self.progress(f"building the fabric {fabric.spec}: {len(fabric.switches)} bridges, "
                          f"{len(fabric.cables)} veth cables")
        bridges = labfabric.build(self.rig, fabric, prefix=self.prefix, controller=f"tcp:127.0.0.1:{OPENFLOW_PORT}")
        bridge, dpid = bridges[fabric.external], fabric.switch(fabric.external).dpid
        external = self.rig.add_host("external", bridge, cidr=f"{EXTERNAL_IP}/24")
        state = LabState(prefix=self.prefix, mode=mode, bridge=bridge, dpid=dpid,
                         external={"netns": external.netns, "ip": EXTERNAL_IP, "mac": external.mac,
                                   "port": external.ofport}, dual_stack=dual_stack, topology=fabric.spec,
                         switch_of={} if fabric.single else {"external": fabric.external})
        if dual_stack:
            netns.configure_ipv6(external.netns, "eth0", f"{EXTERNAL_IP6}/64", link_local=link_local(EXTERNAL_IP6))
            state.external["ip6"] = EXTERNAL_IP6
        if in_uml:
            state.api_host = CONTROLLER_IP
            state.controller_port = self.rig.add_mgmt_address(bridge, f"{CONTROLLER_IP}/24")
        for index in range(1, nodes + 1):
            switch = fabric.node_switch(index, nodes=nodes)
            on = bridges[switch]
            node = self._add_uml_node(index, on) if in_uml else self._add_netns_node(index, on)
            if not fabric.single:
                state.switch_of[node.name] = switch
            if dual_stack:
                node.ip6 = ip6_of(node.ip)
                if node.netns:  # a User-Mode Linux node configures its own at boot
                    netns.configure_ipv6(node.netns, "eth0", f"{node.ip6}/64", link_local=link_local(node.ip6))
            state.nodes[node.name] = node
        tokens = {name: secrets.token_urlsafe(24) for name in state.nodes}
        (self.workdir / "tokens.json").write_text(json.dumps(tokens))
        (self.workdir / "tokens.json").chmod(0o600)
        if kubernetes:
            self._start_kubernetes(state, kubelet=kubelet > 0)
        state.save(self.state_file)

        self.progress(f"starting the controller (OpenFlow 127.0.0.1:{OPENFLOW_PORT}, "
                      f"API {state.api_host}:{API_PORT})")
        controller = self.controller(state)
        controller.audit_interval = audit_interval  # [openflow] audit_interval (None: its default), kept in the config
        controller.write_config()
        controller.start()
        controller.wait_healthy(timeout=20, switches=len(fabric.switches))
        install.install_binary(self.bin_dir)
        for node in state.nodes.values():
            self.progress(f"starting the node agent of {node.name}"
                          + (" in its User-Mode Linux instance" if node.spool else ""))
            self._start_agent(node, tokens[node.name], mode=mode, state=state)
        for node in state.nodes.values():
            if instance := self.uml_node(node):
                instance.wait_ready(timeout=NODE_BOOT_TIMEOUT)
        if kubernetes:
            self._start_kubelets(state, real=list(state.nodes)[:kubelet], images=images)
        state.save(self.state_file)
        for node in state.nodes.values():
            for index in range(1, pods_per_node + 1):
                self.add_pod(f"{node.name}-pod{index}", node=node.name)
        return self.state

    def _build_in_cluster(self, *, nodes: int, pods_per_node: int, images: Sequence[Path]) -> LabState:
        """The switch, the external host and real kubelet nodes, then underlay as the cluster runs it:
        deploy/kubernetes applied with the lab's overlay (deploy/lab/incluster.py says what the lab adds)."""
        bridge = self.rig.add_bridge(f"{self.prefix}-sw")
        external = self.rig.add_host("external", bridge, cidr=f"{EXTERNAL_IP}/24")
        state = LabState(prefix=self.prefix, mode="macvlan", bridge=bridge, dpid=1,
                         external={"netns": external.netns, "ip": EXTERNAL_IP, "mac": external.mac,
                                   "port": external.ofport})
        for index in range(1, nodes + 1):
            node = self._add_netns_node(index, bridge)
            node.cni_conf = str(self._node_dir(node.name) / "net.d" / install.CONFLIST_NAME)
            node.agent_socket = str(self._node_dir(node.name) / "kubelet" / "run-underlay" / "agent.sock")
            state.nodes[node.name] = node
        self.progress("cabling the management namespace to every node (the switch reaches the controller pods)")
        incluster.cable_management(self.rig, [(n.netns, n.ip, n.port) for n in state.nodes.values()],
                                   service_cidr=SERVICE_CIDR)
        self.rig.ovs.vsctl("set-controller", bridge, *incluster.controller_targets([n.ip for n in state.nodes.values()]))
        self._start_kubernetes(state, kubelet=True)
        state.kubernetes["in_cluster"] = "true"
        state.save(self.state_file)
        self.progress(f"starting containerd, kubelet and kube-proxy in {', '.join(state.nodes)}")
        self.kube.start_real_nodes({name: {
            "node_ip": node.ip, "node_netns": node.netns, "node_dir": self._node_dir(name),
            "cni_sources": [REFERENCE_PLUGINS], "cni_conf_dir": Path(node.cni_conf).parent,
            "api_port_inside": incluster.API_PORT_IN_NODE} for name, node in state.nodes.items()}, images=images)
        self.progress("applying deploy/kubernetes with the lab's overlay (deploy/lab/overlay)")
        incluster.install(self.kube, self.workdir / "incluster")
        incluster.wait_running(self.kube, nodes=nodes)
        incluster.wait_switch_connected(self.rig, bridge, replicas=nodes)
        self.kube.wait_nodes_ready(state.nodes)
        for node in state.nodes.values():
            for index in range(1, pods_per_node + 1):
                self.add_pod(f"{node.name}-pod{index}", node=node.name)
        return self.state

    def down(self) -> None:
        """Remove everything the lab made; fine to run twice, or on a half-built lab."""
        if (self.workdir / "k8s").exists():
            self.kube.stop()
        rig.destroy(self.prefix, self.state_dir)

    # -- Kubernetes (deploy/lab/kubelab.py) ----------------------------------------------------
    @property
    def kube(self) -> KubeSide:
        return KubeSide(self.workdir, self.prefix)

    def _start_kubernetes(self, state: LabState, *, kubelet: bool) -> None:
        self.progress("starting Kubernetes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        self.kube.start(subnet=SUBNET, ranges=(POD_RANGE,), reach_from=self.rig.mgmt_ns, kubelets=kubelet)
        store = controller_store()
        if store != "kubernetes":
            self.progress("this controller has no Kubernetes store yet: it keeps SQLite (pods are still Pod objects)")
        state.kubernetes = {"kubeconfig": str(self.kube.kubeconfig), "store": store}

    def _start_kubelets(self, state: LabState, *, real: Sequence[str], images: Sequence[Path]) -> None:
        """A real kubelet with containerd and kube-proxy for the nodes named `real`
        (deploy/lab/realnode.py), the stand-in for every other node."""
        if real:
            self.progress(f"starting containerd, kubelet and kube-proxy in {', '.join(real)}")
            self.kube.start_real_nodes({name: {
                "node_ip": state.nodes[name].ip, "node_netns": state.nodes[name].netns, "node_dir": self._node_dir(name),
                "cni_sources": self.cni_path, "cni_conf_dir": Path(state.nodes[name].cni_conf).parent}
                for name in real}, images=images)
        for node in state.nodes.values():
            if node.name in real:
                continue
            self.progress(f"starting the kubelet stand-in of {node.name} (Node object, pods' network)")
            self.kube.start_kubelet(node.name, node_ip=node.ip, node_netns=node.netns, conflist=node.cni_conf,
                                    cni_path=self.cni_path, node_dir=self._node_dir(node.name))
        self.kube.wait_nodes_ready(state.nodes)

    def pods(self, state: LabState | None = None) -> dict[str, PodInfo]:
        """The lab's pods: with Kubernetes, what the kubelet stand-ins attached (by pod name in the
        default namespace, else namespace/name)."""
        state = state or self.state
        if not state.kubernetes:
            return state.pods
        pods = {}
        for node, attached in self.kube.attached():
            name = attached.name if attached.namespace == "default" else attached.key
            pods[name] = PodInfo(name=name, netns=attached.netns, node=node, ip=attached.ip, mac=attached.mac,
                                 container_id=attached.container_id, result=dict(attached.result))
        return pods

    # -- nodes -------------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        return self.workdir / "cni-bin"

    def _node_dir(self, name: str) -> Path:
        return self.workdir / "nodes" / name

    def _add_netns_node(self, index: int, bridge: str) -> NodeInfo:
        host = self.rig.add_host(f"node{index}", bridge, cidr=f"198.18.0.{10 + index}/24")
        return NodeInfo(name=host.name, netns=host.netns, ip=str(host.ip), mac=host.mac, port=host.ofport,
                        cni_conf="", agent_socket="")

    def _add_uml_node(self, index: int, bridge: str) -> NodeInfo:
        """A node that will be a User-Mode Linux instance on a tap port (booted by `_start_agent`)."""
        name, ip = f"node{index}", f"198.18.0.{10 + index}"
        _, ofport = self.rig.add_tap(bridge)
        return NodeInfo(name=name, netns="", ip=ip, mac=mac_of(ip), port=ofport, cni_conf="", agent_socket="",
                        spool=str(UmlNode(self._node_dir(name)).spool))

    def _start_agent(self, node: NodeInfo, token: str, *, mode: str, state: LabState) -> None:
        directory = self._node_dir(node.name)
        (directory / "net.d").mkdir(parents=True, exist_ok=True)
        token_file = directory / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        node.agent_socket = umlnode.AGENT_SOCKET if node.spool else str(directory / "agent.sock")
        # 1.0.0: the newest version Debian's reference plugins (tuning, chained after ours) speak
        conflist = node_conflist(install.example_conflist(
            master="eth0", agent_socket=node.agent_socket, cni_version="1.0.0",
            service_cidrs=(SERVICE_CIDR,) if state.kubernetes else ()), mode=mode)  # pods reach Services via the node
        node.cni_conf = str(directory / "net.d" / install.CONFLIST_NAME)
        Path(node.cni_conf).write_text(json.dumps(conflist, indent=2) + "\n")
        if node.spool:
            self._boot_uml(node, state)
        else:
            self._launch_agent(node, state)

    def _boot_uml(self, node: NodeInfo, state: LabState) -> None:
        """Register the node's uplink first: until the controller places it, the switch drops what
        the node sends, so its agent could not reach the controller over the segment at all."""
        self.controller(state).request("PUT", f"/v1/nodes/{node.name}", {
            "mac": node.mac, "ip": node.ip, **({"ip6": node.ip6} if node.ip6 else {})}, node=node.name)
        UmlNode(self._node_dir(node.name)).boot(
            ns=self.rig.mgmt_ns, tap=self.rig.tap_name(node.port), mac=node.mac, cidr=f"{node.ip}/24",
            cidr6=f"{node.ip6}/64" if node.ip6 else None, link_local=link_local(node.ip6) if node.ip6 else None,
            agent_argv=self._agent_argv(node, state), lab_dir=self.workdir,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
                 "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"})

    def _agent_argv(self, node: NodeInfo, state: LabState) -> list[str]:
        directory = self._node_dir(node.name)
        return [sys.executable, "-m", "node_agent.main", "--node", node.name,
                *self.controller(state).agent_args(), "--token-file", str(directory / "token"),
                "--socket", node.agent_socket, "--master", "eth0", "--state-dir", str(directory / "state"),
                *(["--netns", node.netns] if node.netns else []), *labmetrics.agent_flags(state.nodes, node.name)]

    def _launch_agent(self, node: NodeInfo, state: LabState) -> None:
        directory = self._node_dir(node.name)
        Path(node.agent_socket).unlink(missing_ok=True)
        start_daemon(self._agent_argv(node, state), pidfile=directory / "agent.pid",
                     logfile=directory / "agent.log", ns=self.rig.mgmt_ns)
        _wait(lambda: Path(node.agent_socket).exists(), timeout=20,
              what=f"agent of {node.name} (log: {directory / 'agent.log'})")

    def uml_node(self, node: NodeInfo) -> UmlNode | None:
        """The instance a node is, or None for a namespace node."""
        return UmlNode(self._node_dir(node.name)) if node.spool else None

    # -- pods --------------------------------------------------------------------------------
    def add_pod(self, name: str, *, node: str, ip: str | None = None) -> PodInfo:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", name):
            raise LabError(f"pod name {name!r}: lowercase letters, digits and '-', at most 32")
        with self._holding_pod(name):
            return self._add_pod(name, node=node, ip=ip, state=self.state)

    def _add_pod(self, name: str, *, node: str, ip: str | None, state: LabState) -> PodInfo:
        if name in state.pods:
            raise LabError(f"pod {name} exists already")
        if node not in state.nodes:
            raise LabError(f"no node {node!r}: the lab has {', '.join(state.nodes)}")
        if state.kubernetes:
            self.progress(f"creating Pod default/{name} for the scheduler to place on {node}")
            self.kube.add_pod(name, node=node, ip=ip)
            return self.pods(state)[name]
        self.progress(f"creating pod {name} on {node} through the CNI plugin")
        pod_ns = f"{self.prefix}-{name}"
        where = state.nodes[node]
        self._create_pod_netns(where, pod_ns)
        attachment = self._attachment(name, pod_ns, ip=ip)
        try:
            result = run_chain(self._conflist(where), "ADD", attachment, cni_path=self.cni_path,
                               execute=self._execute(where))
        except BaseException:
            self._remove_pod_netns(where, pod_ns)
            raise
        interface = next(i for i in result["interfaces"] if i.get("sandbox"))
        addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
        pod = PodInfo(name=name, netns=pod_ns, node=node, ip=addresses[0], mac=interface["mac"],
                      container_id=attachment.container_id, result=result,
                      ip6=next((a for a in addresses if ":" in a), ""))
        with self._changing() as fresh:
            fresh.pods[name] = pod
        return pod

    def delete_pod(self, name: str) -> None:
        with self._holding_pod(name):
            state = self.state
            if state.kubernetes:
                self.progress(f"deleting Pod {name}")
                self.kube.delete_pod(name)
                return
            pod = state.pods.get(name)
            if pod is None:
                raise LabError(f"no pod {name!r}")
            self.progress(f"deleting pod {name} through the CNI plugin")
            self.run_cni("DEL", pod, state=state)
            self._remove_pod_netns(state.nodes[pod.node], pod.netns)
            with self._changing() as fresh:
                fresh.pods.pop(name, None)

    def run_cni(self, command: str, pod: PodInfo, *, state: LabState | None = None) -> Any:
        """CHECK or DEL `pod` through its node's chain, with its cached ADD result, as a runtime does."""
        node = (state or self.state).nodes[pod.node]
        attachment = self._attachment(pod.name, pod.netns, container_id=pod.container_id)
        return run_chain(self._conflist(node), command, attachment, cni_path=self.cni_path,
                         execute=self._execute(node), prev_result=pod.result)

    def _execute(self, node: NodeInfo) -> Execute:
        """How a CNI plugin runs on `node`: in its namespace, or inside its instance."""
        instance = self.uml_node(node)
        return instance.execute if instance else in_namespace(node.netns)

    def _create_pod_netns(self, node: NodeInfo, name: str) -> None:
        instance = self.uml_node(node)
        instance.create_netns(name) if instance else netns.create(name)

    def _remove_pod_netns(self, node: NodeInfo, name: str) -> None:
        instance = self.uml_node(node)
        instance.remove_netns(name) if instance else netns.remove(name)

    @property
    def cni_path(self) -> list[Path]:
        return [self.bin_dir, REFERENCE_PLUGINS]

    @staticmethod
    def _conflist(node: NodeInfo) -> dict[str, Any]:
        conflist: dict[str, Any] = json.loads(Path(node.cni_conf).read_text())
        return conflist

    @staticmethod
    def _attachment(name: str, pod_ns: str, *, ip: str | None = None, container_id: str | None = None) -> Attachment:
        args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": name}
        if ip:
            args["IP"] = ip
        return Attachment(container_id=container_id or secrets.token_hex(16), netns_path=f"/run/netns/{pod_ns}",
                          args=args)

    # -- running things ----------------------------------------------------------------------
    def namespace_of(self, name: str) -> str:
        state = self.state
        if name == "external":
            return str(state.external["netns"])
        if name in state.nodes:
            return state.nodes[name].netns
        pods = self.pods(state)
        if name in pods:
            return pods[name].netns
        raise LabError(f"no node, pod or external named {name!r}: try `underlay-lab status`")

    def run_inside(self, name: str, argv: list[str], *,
                   timeout: float = 600) -> subprocess.CompletedProcess[bytes] | None:
        """Run `argv` in node or pod `name` when it lives inside a User-Mode Linux instance (through its
        command channel); None when `name` is a namespace of this kernel (`namespace_of`)."""
        state = self.state
        pod = self.pods(state).get(name)
        node = state.nodes.get(pod.node if pod else name)
        instance = self.uml_node(node) if node else None
        if instance is None:
            return None
        return instance.run(["ip", "netns", "exec", pod.netns, *argv] if pod else argv, timeout=timeout)

    def runner(self, name: str) -> transfer.Runner:
        """How a program runs on node, pod or `external` `name`, wherever it lives."""
        def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
            inside = self.run_inside(name, list(argv), timeout=timeout)
            return inside if inside is not None else transfer.in_namespace(self.namespace_of(name))(argv, timeout)
        return run

    def exchange(self, client: str, server: str, *, proto: str = "tcp", ipv6: bool = False) -> transfer.Transfer:
        """A checked TCP (or UDP) transfer from `client` to `server` (nodes, pods or `external`), to
        its IPv6 address with `ipv6` (--dual-stack)."""
        address = self.address_of(server, ipv6=ipv6)
        return transfer.exchange(self.runner(server), self.runner(client), address, proto=proto)

    def address_of(self, name: str, *, ipv6: bool = False) -> str:
        """The IPv4 (or IPv6) address of node, pod or `external` `name`."""
        state = self.state
        if name == "external":
            address = str(state.external.get("ip6" if ipv6 else "ip", ""))
        else:
            holder: PodInfo | NodeInfo = self.pods(state).get(name) or state.nodes[name]
            address = holder.ip6 if ipv6 else holder.ip
        if not address:
            raise LabError(f"{name} has no {'IPv6' if ipv6 else 'IPv4'} address (underlay-lab up --dual-stack)")
        return address

    def switch_env(self) -> dict[str, str]:
        return self.rig.ovs.env

    def restart(self, what: str, node: str | None = None, *, kill: bool = False) -> None:
        state = self.state
        switches = len(topology.parse(state.topology).switches)
        if what == "controller":
            self.controller(state).restart(kill=kill)
            self.controller(state).wait_healthy(timeout=20, switches=switches)
        elif what == "switch":
            self.rig.ovs.restart_switch(kill=kill)
            self.controller(state).wait_healthy(timeout=20, switches=switches)
        elif what == "agent":
            if node not in state.nodes:
                raise LabError(f"restart agent NODE: one of {', '.join(state.nodes)}")
            info = state.nodes[node]
            if instance := self.uml_node(info):
                instance.restart_agent(self._agent_argv(info, state), kill=kill)
                return
            stop_pidfile(self._node_dir(node) / "agent.pid", sig=_signal(kill))
            self._launch_agent(info, state)
        else:
            raise LabError(f"restart {what}: controller, agent NODE or switch")

    # -- the demo ----------------------------------------------------------------------------
    def demo(self) -> list[dict[str, Any]]:
        """From the external host: ARP, ping and a TCP transfer to every pod; who answered each ARP,
        and with what."""
        state = self.state
        controller = self.controller(state)
        ext = state.external
        rows = []
        for pod in self.pods(state).values():
            before_flow = self._responder_packets(state, pod.ip)
            before_packet_ins = labfabric.packet_ins(controller.health()["stats"])
            request = frames.Arp(op=1, sha=ext["mac"], spa=ext["ip"], tha="00:00:00:00:00:00", tpa=pod.ip,
                                 eth_src=ext["mac"], eth_dst=frames.BROADCAST)
            replies = frames.arp_exchange(ext["netns"], "eth0", request, timeout=1.0)
            flow_hits = self._responder_packets(state, pod.ip) - before_flow
            packet_ins = labfabric.packet_ins(controller.health()["stats"]) - before_packet_ins
            ping = netns.run(ext["netns"], ["ping", "-n", "-c", "1", "-W", "2", pod.ip], check=False)
            rows.append({
                "pod": pod.name, "node": pod.node, "ip": pod.ip, "mac": pod.mac,
                "arp_reply_mac": replies[0].sha if replies else None,
                "answered_by": "switch flow" if flow_hits > 0 and packet_ins == 0 else
                               ("controller" if packet_ins else "nobody"),
                "responder_flow_hits": flow_hits, "controller_packet_ins": packet_ins,
                "ping": ping.returncode == 0,
                "tcp": self.exchange("external", pod.name),
                **(self._demo_ipv6(state, pod) if pod.ip6 else {}),
            })
        return rows

    def _demo_ipv6(self, state: LabState, pod: PodInfo) -> dict[str, Any]:
        """The IPv6 half of a pod's demo row: the external host forgets the pod's address, pings it
        (its kernel solicits the MAC first), and shows what its neighbour table learned; who
        answered the solicitation (the responder flow's counter rose, the controller's packet-ins
        did not); then TCP over IPv6."""
        controller, ext = self.controller(state), state.external["netns"]
        netns.run(ext, ["ip", "-6", "neigh", "flush", "to", pod.ip6], check=False)
        before_flow = self._nd_responder_packets(state, pod.ip6)
        before_packet_ins = labfabric.packet_ins(controller.health()["stats"])
        ping6 = netns.run(ext, ["ping", "-n", "-c", "1", "-W", "2", pod.ip6], check=False)
        neighbours = json.loads(netns.run(ext, ["ip", "-j", "-6", "neigh", "show", pod.ip6, "dev", "eth0"]).stdout
                                or "[]")
        # a packet that met a cached datapath flow is counted on its OpenFlow rule only when the
        # revalidators next pass: wait for a full pass, not for some time
        self.rig.ovs.appctl("revalidator/wait")
        flow_hits = self._nd_responder_packets(state, pod.ip6) - before_flow
        packet_ins = labfabric.packet_ins(controller.health()["stats"]) - before_packet_ins
        return {"ip6": pod.ip6, "nd_reply_mac": neighbours[0].get("lladdr") if neighbours else None,
                "nd_answered_by": "switch flow" if flow_hits > 0 and packet_ins == 0 else
                                  ("controller" if packet_ins else "nobody"),
                "nd_flow_hits": flow_hits, "nd_packet_ins": packet_ins, "ping6": ping6.returncode == 0,
                "tcp6": self.exchange("external", pod.name, ipv6=True)}

    def demo_across(self) -> list[tuple[str, str, transfer.Transfer]]:
        """A TCP transfer from the first pod of each node to the first pod of the next node."""
        state = self.state
        first: dict[str, PodInfo] = {}
        for pod in self.pods(state).values():
            first.setdefault(pod.node, pod)
        pods = [first[node] for node in state.nodes if node in first]
        pairs = list(zip(pods, pods[1:] + pods[:1])) if len(pods) > 1 else []
        return [(a.name, b.name, self.exchange(a.name, b.name)) for a, b in pairs]

    def _nd_responder_packets(self, state: LabState, ip6: str) -> int:
        """Packets the flow that answers Neighbor Solicitations for `ip6` turned into advertisements."""
        dump = self.rig.ovs.ofctl("dump-flows", state.bridge, f"icmp6,icmp_type=135,nd_target={ip6}")
        return sum(int(m) for line in dump.splitlines() if "set_field" in line
                   for m in re.findall(r"n_packets=(\d+)", line))

    def _responder_packets(self, state: LabState, ip: str) -> int:
        return labfabric.responder_packets(self.rig.ovs, state.bridge, ip)


def node_conflist(example: dict[str, Any], *, mode: str) -> dict[str, Any]:
    """The example conflist (macvlan's) in `mode`: ipvlan in l2, where pods ARP like any host."""
    if mode == "ipvlan":
        ours = example["plugins"][0]
        ours.pop("macvlanMode", None)
        ours.update(mode="ipvlan", ipvlanMode="l2")
    return example


def lab_pool(*, dual_stack: bool) -> PoolSpec:
    if dual_stack:
        return PoolSpec(SUBNET, ranges=(POD_RANGE,), subnet6=SUBNET6, ranges6=(POD_RANGE6,), gateway6=GATEWAY6,
                        routes=(("::/0", GATEWAY6),))
    return PoolSpec(SUBNET, ranges=(POD_RANGE,))


def ip6_of(ip: str) -> str:
    """A node's IPv6 address in SUBNET6, ending as its IPv4 one does (fd00:18::11 for 198.18.0.11)."""
    return f"{SUBNET6.split('::')[0]}::{ip.rsplit('.', 1)[1]}"


def mac_of(ip: str) -> str:
    """A locally administered MAC that spells the IPv4 address (02:55:c6:12:00:0b for 198.18.0.11)."""
    return "02:55:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def kernel_has_ipvlan() -> bool:
    """Ask the kernel for an ipvlan on a throwaway namespace's loopback: a kernel without ipvlan
    refuses the kind (not supported), one with it refuses the loopback parent. Nothing is made."""
    probe = subprocess.run(["unshare", "--net", "ip", "link", "add", "link", "lo", "name", "ulprobe0",
                            "type", "ipvlan"], capture_output=True, text=True, timeout=10)
    refusal = probe.stderr.lower()
    return not ("not supported" in refusal or "unknown device type" in refusal)


def _signal(kill: bool) -> Any:
    import signal

    return signal.SIGKILL if kill else signal.SIGTERM


def _wait(probe: Callable[[], bool], *, timeout: float, what: str) -> None:
    wait_until(probe, timeout=timeout, what=what, error=LabError)
