"""What recording trusted ports' sources in the `seen` table (openflow.pipeline: learn actions) costs
the switch, against the same flows without the learn actions, on the rig's Open vSwitch.

Run by hand as root: `.venv/bin/python tests/bench/bench_seen.py [--macs 20000] [--seconds 5] [--runs 3]`.
Not collected by pytest.

From a host on a trusted port to a node:
- new sources: `--macs` frames, each from another source MAC (a raw socket, as a router's segment
  full of hosts would look): ovs-vswitchd's CPU per frame (/proc), and the datapath flows and `seen`
  records left. Without learn, one megaflow serves every source; with it, each new source is an
  upcall, a megaflow of its own and one learned flow.
- one TCP stream for `--seconds` (checksum offload off, as the lab does): steady-state throughput,
  where the learn action is not executed per packet.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "openflow"))

from bench_controller import cpu_seconds  # noqa: E402
from ofpeer import connected  # noqa: E402

from deploy.lab import frames, netns  # noqa: E402
from deploy.lab.rig import Host, Rig  # noqa: E402
from openflow.diff import diff  # noqa: E402
from openflow.flows import Flow, Learn  # noqa: E402
from openflow.model import Placement, PortRole, SwitchPort, SwitchState  # noqa: E402
from openflow.pipeline import desired_flows, seen_cookie  # noqa: E402

COOKIE = 0x55AA_0000_0000_0000
SINK = "import socket,sys;s=socket.socket();s.bind(('',5201));s.listen();c,_=s.accept();n=0\n" \
       "while (b:=c.recv(1<<20)): n+=len(b)\nprint(n)"


def flows(node: Host, router: Host, *, learn: bool) -> frozenset[Flow]:
    state = SwitchState(dpid=1, cookie=COOKIE, ports=(SwitchPort(node.ofport, PortRole.NODE),
                                                      SwitchPort(router.ofport, PortRole.TRUSTED)),
                        placements=(Placement(str(node.ip), node.mac, node.ofport, "node/n1"),))
    desired = desired_flows(state)
    if learn:
        return desired
    return frozenset(Flow(f.table, f.priority, f.match, tuple(a for a in f.actions if not isinstance(a, Learn)),
                          f.goto, f.cookie) for f in desired)


def new_sources(rig: Rig, node: Host, router: Host, count: int) -> tuple[float, int, int]:
    """µs of switch CPU per frame the switch took in, datapath flows, seen records after `count` new
    sources (paced: a burst the veth cannot buffer would be dropped before the switch sees it)."""
    rig.ovs.ofctl("del-flows", node.bridge, f"cookie={seen_cookie(COOKIE):#x}/-1")
    rig.ovs.appctl("dpctl/del-flows")
    taken_before = trusted_packets(rig, router)
    payload = frames.ipv4_udp(src=str(router.ip), dst=str(node.ip), payload=b"x" * 18)
    sent = [frames.ethernet(dst=node.mac, src=f"02:5e:{i >> 24 & 0xff:02x}:{i >> 16 & 0xff:02x}:"
                                             f"{i >> 8 & 0xff:02x}:{i & 0xff:02x}",
                            ethertype=frames.ETH_P_IP, payload=payload) for i in range(count)]
    pidfile = rig.ovs.workdir / "ovs-vswitchd.pid"
    before = cpu_seconds(pidfile)
    with frames.open_socket(router.netns, router.ifname) as sock:
        for index, frame in enumerate(sent):
            sock.send(frame)
            if index % 16 == 15:
                time.sleep(0.0005)
    rig.ovs.appctl("revalidator/wait")
    used = cpu_seconds(pidfile) - before
    taken = trusted_packets(rig, router) - taken_before
    datapath = len(rig.ovs.appctl("dpctl/dump-flows").splitlines())
    seen = sum(1 for line in rig.ovs.ofctl("dump-flows", "--no-stats", node.bridge, "table=3").splitlines()
               if f"cookie={seen_cookie(COOKIE):#x}" in line)
    return used / taken * 1e6, datapath, seen


def trusted_packets(rig: Rig, router: Host) -> int:
    """Frames the switch took in from the trusted port (its ingress flows' counters)."""
    dump = rig.ovs.ofctl("dump-flows", router.bridge, f"table=0,in_port={router.ofport}")
    return sum(int(part.split("=")[1].rstrip(",")) for part in dump.split() if part.startswith("n_packets="))


def tcp_gbps(node: Host, router: Host, seconds: float) -> float:
    sink = subprocess.Popen(netns.exec_argv(node.netns, [sys.executable, "-c", SINK]), stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the sink's listen(): a bench, not a test
    source = ("import socket,time;s=socket.create_connection((%r,5201));b=bytes(1<<20);t=time.monotonic()+%f\n"
              "while time.monotonic()<t: s.sendall(b)\ns.close()" % (node.ip, seconds))
    router.run(sys.executable, "-c", source, timeout=seconds + 30)
    received = int(sink.communicate(timeout=30)[0])
    return received * 8 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with Rig() as rig:
        bridge = rig.add_bridge()
        node = rig.add_host("n1", bridge, cidr="198.18.7.1/24")
        router = rig.add_host("router", bridge, cidr="198.18.7.254/24")
        for host in (node, router):
            netns.tx_checksum_off(host.netns, host.ifname)
        router.run("ip", "neigh", "replace", str(node.ip), "lladdr", node.mac, "dev", router.ifname)
        node.run("ip", "neigh", "replace", str(router.ip), "lladdr", router.mac, "dev", node.ifname)
        print(f"{'learn':6} {'µs CPU/new source':>18} {'datapath flows':>15} {'seen records':>13} {'TCP Gbit/s':>11}")
        with connected(rig, bridge) as switch:
            for learn in (False, True, False, True):
                rig.ovs.ofctl("del-flows", bridge)  # and the seen records with them
                switch.flow_mods(diff((), flows(node, router, learn=learn))[1])
                cpu, datapath, seen = zip(*(new_sources(rig, node, router, args.macs) for _ in range(args.runs)))
                gbps = [tcp_gbps(node, router, args.seconds) for _ in range(args.runs)]
                print(f"{'yes' if learn else 'no':6} {statistics.median(cpu):18.1f} {max(datapath):15d} "
                      f"{max(seen):13d} {statistics.median(gbps):11.2f}")


if __name__ == "__main__":
    main()
