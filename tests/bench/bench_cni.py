"""ADD+DEL latency: our plugin vs Debian's reference macvlan + host-local, same rig, same run.

Run by hand as root: `.venv/bin/python tests/bench/bench_cni.py [--runs 30]`. Not collected by pytest.

Both plugins run as a runtime runs them (env + stdin, a fresh process per call) inside the node's
namespace (entered by setns in the child, so no `ip netns exec` cost on either side), on the same
pod namespace, interleaved run by run, with the CNI_ARGS kubelet passes. Ours is measured twice: with
the real controller (an `underlay-controller` process on the rig's switch, as in the lab: allocation,
flows, barrier) and standalone with host-local (the same IPAM as the reference). Also: the plugin's
start time alone (VERSION) and the agent's RSS. Agents run as `python -m node_agent.main` from this
tree (PYTHONPATH), so a copy of this file in another checkout measures that checkout's plugin and agent.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cni import install  # noqa: E402
from deploy.lab import netns  # noqa: E402
from deploy.lab.control import Controller, NodeSpec, PoolSpec  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402

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


def start_controller(rig: Rig, bridge: str, node, workdir: Path) -> Controller:  # noqa: ANN001
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    dpid = int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)
    controller = Controller(workdir=workdir, ns=rig.mgmt_ns, verbose=False,
                            nodes={"node": NodeSpec("node", dpid=dpid, port=node.ofport)}, trusted={},
                            pool=PoolSpec("198.18.7.0/24", ranges=("198.18.7.100-198.18.7.199",)))
    controller.start()
    controller.wait_healthy(timeout=15, switches=1)
    return controller


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    with Rig() as rig, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bridge = rig.add_bridge()
        node = rig.add_host("node", bridge, cidr="198.18.7.10/24")
        controller = start_controller(rig, bridge, node, rig.workdir / "controller")
        pod_ns = f"{rig.prefix}-pod"
        netns.create(pod_ns)
        pod = f"/run/netns/{pod_ns}"
        bin_dir = tmp / "bin"
        plugin = install.install_binary(bin_dir)
        (tmp / "token").write_text(controller.nodes["node"].token)
        agents = {}
        for name, extra in (("ctl", [*controller.agent_args(), "--token-file", str(tmp / "token")]),
                            ("alone", [])):
            sock = tmp / f"{name}.sock"
            argv = [*AGENT, "--node", "node", "--netns", node.netns, "--master", "eth0", "--socket", str(sock),
                    "--state-dir", str(tmp / f"{name}-state"), "--resync-interval", "3600", *extra]
            agents[name] = (sock, start_agent(argv, sock, ns=rig.mgmt_ns, log=tmp / f"{name}.log"))
        host_local = {"type": "host-local", "dataDir": str(tmp / "ipam"),
                      "ranges": [[{"subnet": "198.18.7.0/24", "rangeStart": "198.18.7.100"}]]}
        base = {"cniVersion": "1.0.0", "name": "bench"}
        confs = {
            "reference macvlan+host-local": (REFERENCE / "macvlan", dict(base, type="macvlan", master="eth0",
                                                                         mode="bridge", ipam=host_local)),
            "underlay + controller": (plugin, dict(base, type="underlay", master="eth0",
                                                   agentSocket=str(agents["ctl"][0]))),
            "underlay + host-local": (plugin, dict(base, type="underlay", master="eth0",
                                                   agentSocket=str(agents["alone"][0]), ipam=host_local)),
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in confs}
        kw = {"node_ns": node.netns, "pod": pod, "bin_dir": bin_dir}
        for i in range(runs + 2):  # two warm-up rounds
            for name, (path, conf) in confs.items():
                times = add_del(path, conf, cid=f"bench{i}", **kw)
                if i >= 2:
                    samples[name].append(times)
        starts = [call(plugin, "VERSION", {}, cid="", **kw) for _ in range(runs)]
        ref_starts = [call(REFERENCE / "macvlan", "VERSION", {}, cid="", **kw) for _ in range(runs)]
        reference = statistics.median(sum(t) for t in samples["reference macvlan+host-local"])
        print(f"median of {runs} runs (ms):{'ADD+DEL':>31s} {'ADD':>7s} {'DEL':>7s}")
        for name, values in samples.items():
            total, adds, dels = (statistics.median(v) * 1000 for v in ([sum(t) for t in values], *zip(*values)))
            print(f"  {name:32s} {total:7.1f} {adds:7.1f} {dels:7.1f}   ratio to reference {total / reference * 1e-3:5.2f}")
        print(f"plugin start alone (VERSION): underlay {statistics.median(starts) * 1000:.1f} ms, "
              f"reference macvlan {statistics.median(ref_starts) * 1000:.1f} ms")
        for name, (_, proc) in agents.items():
            print(f"agent RSS ({name}): {rss_kib(proc.pid) / 1024:.1f} MiB")
            proc.terminate()
            proc.wait()
        controller.stop()


if __name__ == "__main__":
    main()
