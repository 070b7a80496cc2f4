"""What a real kubelet node of the lab (`underlay-lab up --kubernetes --kubelet`) is made of, as files:
containerd's config, kubelet's, kube-proxy's and their kubeconfigs. Pure: paths in, text or dicts out;
deploy/lab/realnode.py writes them and runs the processes.

Where the node lives: kubelet, containerd and kube-proxy run inside the lab node's network namespace
(entered with `nsenter --net` only, so they share the host's mount namespace, see below), not on the
host cabled to the lab switch. Why:
- hostNetwork pods (the agent DaemonSet) are then in the node exactly as in production: the node's
  eth0 is their uplink, its address their address;
- nothing the node does reaches the host's network: kube-proxy's iptables rules, kubelet's ports
  (10250, 10248), the pods' routes all stay in the namespace, so the shared machine's eth0 and routes
  are never touched, and the lab switch's port of the node is the node's only way out;
- the stand-in nodes (deploy/lab/kubelet.py) are namespaces the same way, so one lab mixes both.
The API server (on the host's loopback) is reached at the same address inside the node through
deploy/lab/tcpforward.py, so its certificate for 127.0.0.1 checks out.

One mount namespace for all: containerd mounts rootfs and kubelet mounts Secret/token volumes that
runc must see, so neither may run under `ip netns exec` (which makes a private mount namespace of
its own). So every path a node would share with another node (or with the machine) is set to one of
its own: containerd's root, state, socket and runc root, kubelet's root directory, pod logs, plugin
directories, the CNI bin and conf directories, and a cgroup subtree `/underlay-<prefix>-<node>` in
every cgroup hierarchy (kubelet's cgroupRoot, and containerd with its shims in it), so `down` finds
and stops every process of a node by cgroup. What stays shared is named uniquely: containerd's
pod namespaces in /run/netns (cni-<uuid>), its shims' sockets in /run/containerd/s (a hash of the
node's socket), kubelet's links in /var/log/containers (pod and container id). Several real nodes
therefore run side by side (`--kubelet 2`), each a namespace on the lab switch.

Traps this machine sets (found running it; see issue 12):
- no registry is reachable: the sandbox (pause) image is imported into containerd, never pulled;
- runc fails with "can't get final child's PID from pipe": this VM refuses to lower a process's
  OOM score, so containerd runs with `restrict_oom_score_adj = true`;
- no systemd, and cgroup v1: kubelet runs with `cgroupDriver: cgroupfs` and `failCgroupV1: false`;
- containerd restarted before the old one has exited fails on its socket and boltdb lock: a restart
  waits for the old process to be gone (realnode.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "localhost/pause:3.10"
CONTAINERD_NAMESPACE = "k8s.io"  # where CRI keeps its images and containers
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
# containerd's snapshotters and services a kubelet node does not use: fewer plugins, a quieter log
DISABLED_PLUGINS = ("io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing")


@dataclass(frozen=True)
class NodeFiles:
    """Where one real node keeps everything, under `root` (`<lab>/nodes/<node>/kubelet`)."""

    root: Path

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def socket(self) -> Path:
        """containerd's gRPC socket; its ttrpc one is this with `.ttrpc`. Short names: a unix socket's
        path has at most 104 bytes here, and the lab's directory may be deep."""
        return self.root / "ctrd.sock"

    @property
    def ttrpc_socket(self) -> Path:
        return self.root / "ctrd.sock.ttrpc"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "root"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni-bin"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def pidfile(self, process: str) -> Path:
        return self.root / f"{process}.pid"

    def logfile(self, process: str) -> Path:
        return self.root / f"{process}.log"


def cgroup_name(prefix: str, node: str) -> str:
    """A node's cgroup subtree (kubelet's cgroupRoot), one per lab and node: never shared."""
    return f"underlay-{prefix}-{node}"


def _toml(value: str | bool | int) -> str:
    """A TOML scalar: JSON's strings and numbers are TOML's basic strings and integers."""
    return ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)


def containerd_config(files: NodeFiles, *, cni_conf_dir: Path, sandbox_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6's config (version 2): its own root, state and socket, the lab's CNI
    directories, the imported pause image, runc through cgroupfs, and restrict_oom_score_adj."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f'{cri}.containerd.runtimes.runc'
    sections: list[tuple[str, Mapping[str, str | bool | int]]] = [
        ("", {"version": 2, "root": str(files.containerd_dir / "root"), "state": str(files.containerd_dir / "state"),
              "oom_score": 0}),
        ("grpc", {"address": str(files.socket)}),
        ("ttrpc", {"address": str(files.ttrpc_socket)}),
        ("debug", {"level": "warn"}),
        ('plugins."io.containerd.internal.v1.opt"', {"path": str(files.containerd_dir / "opt")}),
        (cri, {"sandbox_image": sandbox_image, "restrict_oom_score_adj": True, "enable_selinux": False,
               "stream_server_address": "127.0.0.1", "stream_server_port": "0"}),
        (f"{cri}.containerd", {"snapshotter": "overlayfs", "default_runtime_name": "runc"}),
        (runc, {"runtime_type": "io.containerd.runc.v2"}),
        (f"{runc}.options", {"SystemdCgroup": False, "Root": str(files.containerd_dir / "runc")}),
        (f"{cri}.cni", {"bin_dir": str(files.cni_bin), "conf_dir": str(cni_conf_dir), "max_conf_num": 1}),
    ]
    lines = [f"disabled_plugins = {json.dumps(list(DISABLED_PLUGINS))}"]
    for header, values in sections:
        lines += [f"[{header}]"] if header else []
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def kubelet_config(files: NodeFiles, *, cgroup: str, node_ip: str) -> dict[str, Any]:
    """KubeletConfiguration: cgroupfs in cgroup v1 under the lab's own cgroupRoot, the lab's
    containerd, client certificates only (no anonymous access), and no eviction or image garbage
    collection set off by a full disk of the shared machine (the imported images cannot be pulled
    back)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "cgroupRoot": "/" + cgroup,
        "containerRuntimeEndpoint": f"unix://{files.socket}",
        "address": node_ip, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(files.pki / "client-ca.pem")}},
        "authorization": {"mode": "AlwaysAllow"},  # only holders of a certificate of the lab's CA get here
        "failSwapOn": False, "podLogsDir": str(files.pod_logs), "volumePluginDir": str(files.root / "volume-plugins"),
        "resolvConf": "", "registerNode": True, "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%",
                         "nodefs.inodesFree": "0%"},
        "nodeStatusUpdateFrequency": "10s", "syncFrequency": "10s",
    }


def kubelet_argv(binary: Path, files: NodeFiles, *, node: str, node_ip: str) -> list[str]:
    return [str(binary), f"--config={files.kubelet_config}", f"--kubeconfig={files.kubelet_kubeconfig}",
            f"--root-dir={files.kubelet_root}", f"--cert-dir={files.root / 'serving'}", f"--hostname-override={node}",
            f"--node-ip={node_ip}", "--node-labels=underlay.io/lab-node=true,underlay.io/kubelet=real", "--v=1"]


def proxy_config(files: NodeFiles, *, node: str) -> dict[str, Any]:
    """KubeProxyConfiguration in iptables mode, in the node's namespace; conntrack sysctls left as
    they are (they are the machine's, not the namespace's). `masqueradeAll`: an underlay pod's
    address is on the segment, so a backend's reply to it would go straight back over the segment,
    past this node's conntrack; masqueraded, it comes back through the node to be translated."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(files.proxy_kubeconfig)}, "hostnameOverride": node,
        "mode": "iptables", "iptables": {"masqueradeAll": True}, "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def proxy_argv(binary: Path, files: NodeFiles) -> list[str]:
    return [str(binary), f"--config={files.proxy_config}", "--v=1"]


def kubeconfig(*, server: str, ca_file: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig that authenticates with a client certificate (kubelet: system:node:<node> in
    system:nodes, for the Node authorizer; kube-proxy: system:kube-proxy, bound by RBAC's defaults)."""
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
    }


def apiserver_args(client_ca: Path) -> list[str]:
    """What the API server needs for real kubelets: client certificates from the lab's CA, the Node
    authorizer and NodeRestriction, so a kubelet acts for its own node only. (The flag is a list that
    adds to testenv's `RBAC`; naming RBAC again is refused.)"""
    return [f"--client-ca-file={client_ca}", "--authorization-mode=Node",
            "--enable-admission-plugins=NodeRestriction"]


def cni_links(sources: Sequence[Path]) -> dict[str, Path]:
    """containerd 1.6 reads one CNI bin_dir: name -> the binary it links to, the first directory
    having a name winning (ours before Debian's reference plugins, as CNI_PATH would)."""
    links: dict[str, Path] = {}
    for directory in sources:
        for binary in sorted(directory.iterdir()) if directory.is_dir() else []:
            links.setdefault(binary.name, binary)
    return links
