"""Flow-mods per second placing N pods, ours vs a naive os-ken app, on the same switch, same run.

Run by hand as root: `.venv/bin/python tests/bench/bench_controller.py [--pods 1000 10000] [--runs 3]`.
Not collected by pytest.

Ours: the real controller process (its API over TLS, as agents use it; `--plain-http`: without);
N pods placed through the REST API by 32 concurrent callers,
timed from the first request to the last answer (each answer comes after the switch's barrier), two
ways: "agent" = the node agent's own client (node_agent/controller_client.py), which coalesces
allocations that arrive while one is in flight into batch requests, as it does when kubelet starts
many pods at once; "per-pod" = one `POST .../pods` per pod on keep-alive connections, no batching.
Flow-mods are the controller's own count.
Reference: a naive os-ken app (`naive_app` below) that, on connect, sends the same final flow set one
OFPFlowMod at a time with `datapath.send_msg`, then a barrier: what simple_switch-style code does.
Both start from an empty bridge. Also: the controller's RSS with the N placements, and the same
flows pushed in bulk by ours ("reconnect"): with the N placements stored, the bridge's flows are
deleted and the controller reconnected; timed until the switch holds them all again (that is the
OpenFlow path alone, the same work the naive app does, without the REST calls).
"""

from __future__ import annotations

import argparse
import os
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deploy.lab import netns  # noqa: E402
from deploy.lab.control import Controller, NodeSpec, PoolSpec  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402
from node_agent.controller_client import ControllerClient  # noqa: E402

NAIVE_PORT = 6654
CLIENTS = 32
CLIENT_KINDS = ["agent", "per-pod"]


def pod_request(i: int, run: str) -> dict:
    return {"container_id": f"{run}-{i}", "ifname": "eth0", "namespace": "bench", "name": f"p{i}", "mode": "macvlan"}


def agent_client(controller: Controller) -> Callable[[dict], None]:
    client = ControllerClient(controller.url, "n1", token=controller.nodes["n1"].token, timeout=60,
                              ca_file=str(controller.ca_file) if controller.ca_file else None)
    return lambda request: None if client.allocate(request)["ip"] else None


def per_pod_client(controller: Controller) -> Callable[[dict], None]:
    """One POST per pod on this thread's keep-alive connection, nothing shared."""
    local = threading.local()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {controller.nodes['n1'].token}"}

    def place(request: dict) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(controller.api_host, controller.api_port, timeout=60)
            local.conn.sock = controller.connect(timeout=60)  # TLS too, as the controller speaks
        local.conn.request("POST", "/v1/nodes/n1/pods", body=json.dumps(request), headers=headers)
        response = local.conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()!r}")
        response.read()

    return place


def place_all(controller: Controller, place: Callable[[dict], None], pods: int, run: str) -> float:
    """`place` every pod from CLIENTS threads living in the controller's namespace."""
    inside = []  # kept, or the generator's cleanup would leave the namespace again

    def enter() -> None:
        inside.append(netns.entered(controller.ns))  # for the thread's life: its sockets are made there
        inside[-1].__enter__()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS, initializer=enter) as pool:
        list(pool.map(lambda i: place(pod_request(i, run)), range(pods)))
    return time.perf_counter() - started


def rss_mb(pidfile: Path) -> float:
    pid = pidfile.read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pidfile: Path) -> float:
    """user + system CPU the process used so far."""
    fields = Path(f"/proc/{pidfile.read_text().strip()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def run_ours(rig: Rig, bridge: str, node_port: int, pods: int, run: int, client: str,
             tls: bool) -> tuple[float, int, float, float]:  # fmt: skip
    rig.ovs.ofctl("del-flows", bridge)
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    controller = Controller(workdir=rig.workdir / f"bench-{client}-{pods}-{run}", ns=rig.mgmt_ns,
                            nodes={"n1": NodeSpec("n1", dpid=1, port=node_port)}, trusted={},
                            pool=PoolSpec("198.18.0.0/16", ranges=("198.18.1.0-198.18.254.254",)), verbose=False,
                            tls=tls)
    controller.start()
    try:
        controller.wait_healthy(timeout=20, switches=1)
        controller.request("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:00:01", "ip": "198.18.0.11"}, node="n1")
        before = controller.health()["stats"]["flow_mods"]
        place = agent_client(controller) if client == "agent" else per_pod_client(controller)
        switch_pidfile = rig.ovs.workdir / "ovs-vswitchd.pid"
        cpu_before = [cpu_seconds(controller.pidfile), cpu_seconds(switch_pidfile), time.process_time()]
        seconds = place_all(controller, place, pods, run=f"{client}{run}")
        cpu_after = [cpu_seconds(controller.pidfile), cpu_seconds(switch_pidfile), time.process_time()]
        used = [(b - a) / pods * 1e6 for a, b in zip(cpu_before, cpu_after)]
        print(f"  {client}: CPU per pod: controller {used[0]:.0f} us, switch {used[1]:.0f} us, "
              f"clients {used[2]:.0f} us; wall {seconds / pods * 1e6:.0f} us", flush=True)
        flow_mods = controller.health()["stats"]["flow_mods"] - before
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
    parser.add_argument("--clients", nargs="+", choices=CLIENT_KINDS, default=CLIENT_KINDS)
    parser.add_argument("--plain-http", action="store_true", help="the API without TLS (on loopback)")
    parser.add_argument("--naive-app", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_app:
        naive_app(int(args.naive_app[0]), int(args.naive_app[1]), Path(args.naive_app[2]))
        return
    with Rig() as rig:
        bridge = rig.add_bridge()
        node = rig.add_host("n1", bridge, cidr="198.18.0.11/16", mac="02:00:00:00:00:01")
        for pods in args.pods:
            rates: dict[str, list[float]] = {name: [] for name in [*args.clients, "bulk", "naive"]}
            rss = []
            for run in range(args.runs):
                line = [f"pods={pods} run={run + 1}:"]
                for client in args.clients:
                    seconds, flow_mods, memory, bulk_rate = run_ours(rig, bridge, node.ofport, pods, run, client,
                                                                     tls=not args.plain_http)
                    rates[client].append(flow_mods / seconds)
                    line.append(f"{client} {flow_mods} flow-mods in {seconds:.2f}s ({flow_mods / seconds:,.0f}/s);")
                    if client == args.clients[0]:  # RSS and the bulk rate: once per run
                        rss.append(memory)
                        rates["bulk"].append(bulk_rate)
                        line.append(f"RSS {memory:.0f} MB, bulk on reconnect {bulk_rate:,.0f}/s;")
                naive_seconds, naive_mods = run_naive(rig, bridge, node.ofport, pods)
                rates["naive"].append(naive_mods / naive_seconds)
                line.append(f"naive {naive_mods} in {naive_seconds:.2f}s ({naive_mods / naive_seconds:,.0f}/s)")
                print(" ".join(line), flush=True)
            medians = {name: statistics.median(values) for name, values in rates.items()}
            print(f"pods={pods} medians: " + ", ".join(
                f"{name} {rate:,.0f} flow-mods/s ({rate / medians['naive']:.2f}x naive)" for name, rate in medians.items()
            ) + f"; controller RSS {statistics.median(rss):.0f} MB", flush=True)

if __name__ == "__main__":
    main()
