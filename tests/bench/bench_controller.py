"""Flow-mods per second placing N pods, ours vs a naive os-ken app, on the same switch, same run.

Run by hand as root: `.venv/bin/python tests/bench/bench_controller.py [--pods 1000 10000] [--runs 3]`.
Not collected by pytest.

Ours: the real controller process; N pods placed through the REST API by 32 concurrent clients (as
many nodes' agents would), timed from the first request to the last answer (each answer comes after
the switch's barrier). Flow-mods are the controller's own count.
Reference: a naive os-ken app (`naive_app` below) that, on connect, sends the same final flow set one
OFPFlowMod at a time with `datapath.send_msg`, then a barrier: what simple_switch-style code does.
Both start from an empty bridge. Also: the controller's RSS with the N placements, and the same
flows pushed in bulk by ours ("reconnect"): with the N placements stored, the bridge's flows are
deleted and the controller reconnected; timed until the switch holds them all again (that is the
OpenFlow path alone, the same work the naive app does, without the REST calls).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deploy.lab import netns  # noqa: E402
from deploy.lab.control import Controller, NodeSpec, PoolSpec  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402

NAIVE_PORT = 6654
CLIENTS = 32


def place_all(controller: Controller, pods: int) -> float:
    def place(i: int) -> None:
        controller.request("POST", "/v1/nodes/n1/pods", {
            "container_id": f"bench-{i}", "ifname": "eth0", "namespace": "bench", "name": f"p{i}",
            "mode": "macvlan"}, node="n1")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(place, range(pods)))
    return time.perf_counter() - started


def rss_mb(pidfile: Path) -> float:
    pid = pidfile.read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flow_count(rig: Rig, bridge: str) -> int:
    return int(rig.ovs.ofctl("dump-aggregate", bridge).split("flow_count=")[1].split()[0])


def reconnect_rate(rig: Rig, bridge: str) -> float:
    """Empty the switch, reconnect it; flows per second until the controller has put all back."""
    expected = flow_count(rig, bridge)
    rig.ovs.vsctl("del-controller", bridge)
    rig.ovs.ofctl("del-flows", bridge)
    started = time.perf_counter()
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    while flow_count(rig, bridge) < expected:
        time.sleep(0.01)
    return expected / (time.perf_counter() - started)


def run_ours(rig: Rig, bridge: str, node_port: int, pods: int, run: int) -> tuple[float, int, float, float]:
    rig.ovs.ofctl("del-flows", bridge)
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    controller = Controller(workdir=rig.workdir / f"bench-{pods}-{run}", ns=rig.mgmt_ns,
                            nodes={"n1": NodeSpec("n1", dpid=1, port=node_port)}, trusted={},
                            pool=PoolSpec("198.18.0.0/16", ranges=("198.18.1.0-198.18.254.254",)), verbose=False)
    controller.start()
    try:
        controller.wait_healthy(timeout=20, switches=1)
        controller.request("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:00:01", "ip": "198.18.0.11"}, node="n1")
        before = controller.request("GET", "/v1/health")["stats"]["flow_mods"]
        seconds = place_all(controller, pods)
        flow_mods = controller.request("GET", "/v1/health")["stats"]["flow_mods"] - before
        return seconds, flow_mods, rss_mb(controller.pidfile), reconnect_rate(rig, bridge)
    finally:
        controller.stop()
        rig.ovs.vsctl("del-controller", bridge)


def run_naive(rig: Rig, bridge: str, node_port: int, pods: int) -> tuple[float, int]:
    """The reference: the same flows, one send_msg each, then a barrier."""
    rig.ovs.ofctl("del-flows", bridge)
    result = rig.workdir / "naive.out"
    result.unlink(missing_ok=True)
    proc = subprocess.Popen(netns.exec_argv(rig.mgmt_ns, [sys.executable, __file__, "--naive-app", str(pods),
                                                           str(node_port), str(result)]))
    rig.ovs.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{NAIVE_PORT}")
    try:
        deadline = time.monotonic() + 600
        while not result.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        seconds, flow_mods = result.read_text().split()
        return float(seconds), int(flow_mods)
    finally:
        proc.kill()
        proc.wait()
        rig.ovs.vsctl("del-controller", bridge)


def naive_app(pods: int, node_port: int, result: Path) -> None:
    """Runs in its own process: an os-ken app that installs the final flow set the simple way."""
    import ipaddress

    from os_ken import cfg
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
    from os_ken.ofproto import ofproto_v1_3

    from controller.ipam import derive_mac
    from openflow import ofmsg
    from openflow.model import Placement, PortRole, SwitchPort, SwitchState
    from openflow.pipeline import desired_flows

    first = int(ipaddress.IPv4Address("198.18.1.0"))
    placements = [Placement(ip=str(ipaddress.IPv4Address(first + i)), mac=derive_mac(str(ipaddress.IPv4Address(first + i))),
                            port=node_port) for i in range(pods)]
    placements.append(Placement(ip="198.18.0.11", mac="02:00:00:00:00:01", port=node_port))
    flows = desired_flows(SwitchState(dpid=1, cookie=0x55AA000000000000,
                                      ports=(SwitchPort(node_port, PortRole.NODE),), placements=tuple(placements)))

    class Naive(app_manager.OSKenApp):  # type: ignore[misc]
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        @set_ev_cls(ofp_event.EventOFPStateChange, MAIN_DISPATCHER)
        def connected(self, ev):  # noqa: ANN001
            datapath = ev.datapath
            self.started = time.perf_counter()
            for flow in flows:
                datapath.send_msg(ofmsg.flow_mod(datapath, flow))
            datapath.send_msg(datapath.ofproto_parser.OFPBarrierRequest(datapath))

        @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
        def barrier(self, ev):  # noqa: ANN001
            result.write_text(f"{time.perf_counter() - self.started} {len(flows)}")

    cfg.CONF(args=[], project="bench")
    cfg.CONF.set_override("ofp_listen_host", "127.0.0.1")
    cfg.CONF.set_override("ofp_tcp_listen_port", NAIVE_PORT)
    sys.modules["naive_bench_app"] = type(sys)("naive_bench_app")
    sys.modules["naive_bench_app"].Naive = Naive  # type: ignore[attr-defined]
    Naive.__module__ = "naive_bench_app"
    app_manager.AppManager.run_apps(["naive_bench_app"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--naive-app", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_app:
        naive_app(int(args.naive_app[0]), int(args.naive_app[1]), Path(args.naive_app[2]))
        return
    with Rig() as rig:
        bridge = rig.add_bridge()
        node = rig.add_host("n1", bridge, cidr="198.18.0.11/16", mac="02:00:00:00:00:01")
        for pods in args.pods:
            ours, naive, rss, bulk = [], [], [], []
            for run in range(args.runs):
                seconds, flow_mods, memory, bulk_rate = run_ours(rig, bridge, node.ofport, pods, run)
                ours.append(flow_mods / seconds)
                rss.append(memory)
                bulk.append(bulk_rate)
                naive_seconds, naive_mods = run_naive(rig, bridge, node.ofport, pods)
                naive.append(naive_mods / naive_seconds)
                print(f"pods={pods} run={run + 1}: ours {flow_mods} flow-mods in {seconds:.2f}s "
                      f"({flow_mods / seconds:,.0f}/s, RSS {memory:.0f} MB), bulk on reconnect {bulk_rate:,.0f}/s; "
                      f"naive {naive_mods} in "
                      f"{naive_seconds:.2f}s ({naive_mods / naive_seconds:,.0f}/s)", flush=True)
            print(f"pods={pods}: median ours {statistics.median(ours):,.0f} flow-mods/s, naive "
                  f"{statistics.median(naive):,.0f}/s, ratio {statistics.median(ours) / statistics.median(naive):.2f}x; "
                  f"bulk (reconnect) {statistics.median(bulk):,.0f}/s, ratio "
                  f"{statistics.median(bulk) / statistics.median(naive):.2f}x; "
                  f"controller RSS {statistics.median(rss):.0f} MB", flush=True)


if __name__ == "__main__":
    main()
