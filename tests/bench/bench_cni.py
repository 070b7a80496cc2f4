"""ADD+DEL latency: our plugin vs Debian's reference macvlan + host-local, same rig, same run.

Run by hand as root: `.venv/bin/python tests/bench/bench_cni.py [--runs 30] [--store kubernetes]`.
Not collected by pytest.

Both plugins run as a runtime runs them (env + stdin, a fresh process per call) inside the node's
namespace (entered by setns in the child, so no `ip netns exec` cost on either side), on the same
pod namespace, interleaved run by run, with the CNI_ARGS kubelet passes. Ours is measured twice: with
the real controller (an `underlay-controller` process on the rig's switch, as in the lab: allocation,
flows, barrier) and standalone with host-local (the same IPAM as the reference). Also: the plugin's
start time alone (VERSION) and the agent's RSS. Agents run as `python -m node_agent.main` from this
tree (PYTHONPATH), so a copy of this file in another checkout measures that checkout's plugin and agent.

`--store kubernetes` adds a third run of ours, interleaved with the others: a second controller with
`store = "kubernetes"` on a bridge and node of its own, against a real control plane (the lab's
Kubernetes side, deploy/lab/kubelab.py: etcd on the same disk as the SQLite file, the lab's pool as
an IPPool, the API server reached from the controller's namespace through deploy/lab/tcpforward.py),
with a Pod object for each pod the plugin is called for, as a cluster has. Its ratio to the SQLite
store's run is the issue's ADD latency budget (at most 1.3).

Dual stack, in the same run: the reference macvlan with host-local handing out two ranges (IPv4 and
IPv6) against ours with the same host-local, and ours with a controller whose pool has both
families (a controller, bridge and node of its own). Each dual-stack row's ratio is to the
reference's dual-stack row. The reference waits out duplicate address detection on its IPv6
address before it answers (the address is tentative until then); ours adds it with nodad (the
controller's uniqueness and the switch's port security stand in for DAD: node_agent/netlink.py).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "controller"))

from cni import install  # noqa: E402
from controller.kube.client import NODES, PODS, Kube  # noqa: E402
from deploy.lab import netns  # noqa: E402
from deploy.lab.control import Controller, NodeSpec, PoolSpec  # noqa: E402
from deploy.lab.kubelab import KubeSide  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402
from kubeenv import pod_namespace  # noqa: E402

REFERENCE = Path("/usr/lib/cni")
AGENT = [sys.executable, "-m", "node_agent.main"]
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str):  # noqa: ANN201 - a preexec_fn
    def enter() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        _libc.setns(fd, 0x40000000)
    return enter


def call(plugin: Path, command: str, conf: dict, *, node_ns: str, pod: str, cid: str, bin_dir: Path) -> float:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": pod, "CNI_IFNAME": "eth0",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
           "CNI_PATH": f"{bin_dir}:{REFERENCE}", "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    proc = subprocess.run([str(plugin)], input=json.dumps(conf).encode(), env=env, capture_output=True,
                          preexec_fn=in_netns(node_ns))
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{plugin.name} {command} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


def add_del(plugin: Path, conf: dict, **kw: object) -> tuple[float, float]:
    return call(plugin, "ADD", conf, **kw), call(plugin, "DEL", conf, **kw)  # type: ignore[arg-type]


def start_agent(argv: list[str], sock: Path, *, ns: str, log: Path) -> subprocess.Popen:
    """An agent in the management namespace, where the controller listens on 127.0.0.1."""
    proc = subprocess.Popen(netns.exec_argv(ns, argv), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    while not sock.exists():
        if proc.poll() is not None:
            raise SystemExit(f"agent failed to start:\n{log.read_text()}")
        time.sleep(0.01)
    return proc


def start_controller(rig: Rig, bridge: str, node, workdir: Path, *, name: str = "node",  # noqa: ANN001
                     subnet: str = "198.18.7", offset: int = 0, kubeconfig: Path | None = None,
                     subnet6: str | None = None) -> Controller:
    rig.ovs.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{6653 + offset}")
    dpid = int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)
    controller = Controller(workdir=workdir, ns=rig.mgmt_ns, verbose=False,
                            nodes={name: NodeSpec(name, dpid=dpid, port=node.ofport)}, trusted={},
                            pool=PoolSpec(f"{subnet}.0/24", ranges=(f"{subnet}.100-{subnet}.199",),
                                          **dual_pool(subnet6)),
                            openflow_port=6653 + offset, api_port=6680 + offset, kubeconfig=kubeconfig)
    controller.start(timeout=60)
    controller.wait_healthy(timeout=15, switches=1)
    return controller


def dual_pool(subnet6: str | None) -> dict:
    """The IPv6 half of a bench pool (`fd00:9::`: fd00:9::/64, addresses from ::100, gateway ::1)."""
    if subnet6 is None:
        return {}
    return {"subnet6": f"{subnet6}/64", "ranges6": (f"{subnet6}100-{subnet6}ffff",), "gateway6": f"{subnet6}1",
            "routes": (("::/0", f"{subnet6}1"),)}


def start_kubernetes(rig: Rig, workdir: Path, *, pods: int) -> KubeSide:
    """A control plane with the k8s controller's pool as an IPPool, the node and the pods as objects."""
    side = KubeSide(workdir, rig.prefix)
    side.start(subnet="198.18.8.0/24", ranges=["198.18.8.100-198.18.8.199"], reach_from=rig.mgmt_ns)
    kube = Kube.connect(kubeconfig=str(side.kubeconfig))
    kube.create(NODES.path(), {"metadata": {"name": "node-k8s"}})
    pod_namespace(kube, "bench")
    for i in range(pods):
        kube.create(PODS.path(namespace="bench"), {"metadata": {"name": f"bench{i}"}, "spec": {
            "nodeName": "node-k8s", "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
    kube.close()
    return side


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--store", choices=["kubernetes"], action="append", default=[],
                        help="also measure a controller with this store (beside SQLite's)")
    args = parser.parse_args()
    runs = args.runs
    with Rig() as rig, tempfile.TemporaryDirectory() as tmp_dir, ExitStack() as cleanup:
        tmp = Path(tmp_dir)
        bridge = rig.add_bridge()
        node = rig.add_host("node", bridge, cidr="198.18.7.10/24")
        controller = start_controller(rig, bridge, node, rig.workdir / "controller")
        cleanup.callback(controller.stop)
        ds_bridge = rig.add_bridge()
        ds_node = rig.add_host("node-ds", ds_bridge, cidr="198.18.9.10/24")
        ds_controller = start_controller(rig, ds_bridge, ds_node, rig.workdir / "controller-ds", name="node-ds",
                                         subnet="198.18.9", offset=2, subnet6="fd00:9::")
        cleanup.callback(ds_controller.stop)
        if "kubernetes" in args.store:
            side = start_kubernetes(rig, rig.workdir / "kubernetes", pods=runs + 2)
            cleanup.callback(side.stop)
            k8s_bridge = rig.add_bridge()
            k8s_node = rig.add_host("node-k8s", k8s_bridge, cidr="198.18.8.10/24")
            k8s_controller = start_controller(rig, k8s_bridge, k8s_node, rig.workdir / "controller-k8s",
                                              name="node-k8s", subnet="198.18.8", offset=1, kubeconfig=side.kubeconfig)
            cleanup.callback(k8s_controller.stop)
        pod_ns = f"{rig.prefix}-pod"
        netns.create(pod_ns)
        pod = f"/run/netns/{pod_ns}"
        bin_dir = tmp / "bin"
        plugin = install.install_binary(bin_dir)
        (tmp / "token").write_text(controller.nodes["node"].token)
        agents = {}
        (tmp / "token-ds").write_text(ds_controller.nodes["node-ds"].token)
        kinds = [("ctl", "node", node, [*controller.agent_args(), "--token-file", str(tmp / "token")]),
                 ("alone", "node", node, []),
                 ("ds", "node-ds", ds_node, [*ds_controller.agent_args(), "--token-file", str(tmp / "token-ds")])]
        if "kubernetes" in args.store:
            (tmp / "token-k8s").write_text(k8s_controller.nodes["node-k8s"].token)
            kinds.append(("k8s", "node-k8s", k8s_node,
                          [*k8s_controller.agent_args(), "--token-file", str(tmp / "token-k8s")]))
        for name, node_name, host, extra in kinds:
            sock = tmp / f"{name}.sock"
            argv = [*AGENT, "--node", node_name, "--netns", host.netns, "--master", "eth0", "--socket", str(sock),
                    "--state-dir", str(tmp / f"{name}-state"), "--resync-interval", "3600", *extra]
            agents[name] = (sock, start_agent(argv, sock, ns=rig.mgmt_ns, log=tmp / f"{name}.log"))
        host_local = {"type": "host-local", "dataDir": str(tmp / "ipam"),
                      "ranges": [[{"subnet": "198.18.7.0/24", "rangeStart": "198.18.7.100"}]]}
        two_ranges = {"type": "host-local", "dataDir": str(tmp / "ipam-ds"),
                      "ranges": [[{"subnet": "198.18.7.0/24", "rangeStart": "198.18.7.100"}],
                                 [{"subnet": "fd00:7::/64", "rangeStart": "fd00:7::100"}]]}
        base = {"cniVersion": "1.0.0", "name": "bench"}
        confs = {
            "reference macvlan+host-local": (REFERENCE / "macvlan", dict(base, type="macvlan", master="eth0",
                                                                         mode="bridge", ipam=host_local)),
            "underlay + controller": (plugin, dict(base, type="underlay", master="eth0",
                                                   agentSocket=str(agents["ctl"][0]))),
            "underlay + host-local": (plugin, dict(base, type="underlay", master="eth0",
                                                   agentSocket=str(agents["alone"][0]), ipam=host_local)),
        }
        confs.update({
            "reference, dual stack": (REFERENCE / "macvlan", dict(base, type="macvlan", master="eth0", mode="bridge",
                                                                 ipam=two_ranges)),
            "underlay + controller, dual stack": (plugin, dict(base, type="underlay", master="eth0",
                                                               agentSocket=str(agents["ds"][0]))),
            "underlay + host-local, dual stack": (plugin, dict(base, type="underlay", master="eth0",
                                                               agentSocket=str(agents["alone"][0]), ipam=two_ranges)),
        })
        namespaces = {name: node.netns for name in confs}
        namespaces["underlay + controller, dual stack"] = ds_node.netns
        if "kubernetes" in args.store:
            confs["underlay + controller, kubernetes store"] = (plugin, dict(
                base, type="underlay", master="eth0", agentSocket=str(agents["k8s"][0])))
            namespaces["underlay + controller, kubernetes store"] = k8s_node.netns
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in confs}
        kw = {"pod": pod, "bin_dir": bin_dir}
        for i in range(runs + 2):  # two warm-up rounds
            for name, (path, conf) in confs.items():
                times = add_del(path, conf, cid=f"bench{i}", node_ns=namespaces[name], **kw)
                if i >= 2:
                    samples[name].append(times)
        starts = [call(plugin, "VERSION", {}, cid="", node_ns=node.netns, **kw) for _ in range(runs)]
        ref_starts = [call(REFERENCE / "macvlan", "VERSION", {}, cid="", node_ns=node.netns, **kw) for _ in range(runs)]
        references = {stack: statistics.median(sum(t) for t in samples[name]) for stack, name in (
            ("", "reference macvlan+host-local"), ("dual stack", "reference, dual stack"))}
        print(f"median of {runs} runs (ms):{'ADD+DEL':>31s} {'ADD':>7s} {'DEL':>7s}")
        for name, values in samples.items():
            total, adds, dels = (statistics.median(v) * 1000 for v in ([sum(t) for t in values], *zip(*values)))
            reference = references["dual stack" if name.endswith("dual stack") else ""]
            print(f"  {name:38s} {total:7.1f} {adds:7.1f} {dels:7.1f}   ratio to reference {total / reference * 1e-3:5.2f}")
        if "kubernetes" in args.store:
            ratio = (statistics.median(sum(t) for t in samples["underlay + controller, kubernetes store"])
                     / statistics.median(sum(t) for t in samples["underlay + controller"]))
            print(f"ADD+DEL median, kubernetes store / sqlite store: {ratio:.2f} (budget 1.3)")
        print(f"plugin start alone (VERSION): underlay {statistics.median(starts) * 1000:.1f} ms, "
              f"reference macvlan {statistics.median(ref_starts) * 1000:.1f} ms")
        for name, (_, proc) in agents.items():
            print(f"agent RSS ({name}): {rss_kib(proc.pid) / 1024:.1f} MiB")
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
