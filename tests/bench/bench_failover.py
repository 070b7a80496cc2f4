"""Controller failover time: SIGKILL the leader of two replicas, until the other is master on the switch.

Run by hand as root: `.venv/bin/python tests/bench/bench_failover.py [--runs 5] [--pods 50]
[--lease 15 10 2]`. Not collected by pytest. It starts its own control plane (deploy/k8s/testenv.py)
and rig, and stops both at the end.

Two real `underlay-controller` processes (`store = "kubernetes"`, leader election on the Lease with
Kubernetes' default periods unless `--lease DURATION DEADLINE RETRY`), the rig's Open vSwitch cabled
to both; N pods placed through the leader, one of them a real macvlan pod that the external host
pings every 10 ms throughout. Each run: wait until the follower is slave on the switch, SIGKILL the
leader, and time from the kill until the switch grants the other the master role (the time that
replica logs the switch's role reply) and until its `/v1/ready` answers 200; then the new leader's
flow-mod count (0 when nothing changed) and the pings lost. The killed replica is started again as
the follower, so leadership alternates. The takeover waits for the Lease to expire on the
follower's clock: between `lease_duration - retry_period` and `lease_duration + 2 * retry_period`
after the kill, depending on when the leader last renewed and when the follower next looked.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from controller.kube.client import IPPOOLS, NAMESPACES, NODES, Kube  # noqa: E402
from deploy.k8s import crds  # noqa: E402
from deploy.k8s.testenv import ControlPlane  # noqa: E402
from deploy.lab import netns, process, tcpforward  # noqa: E402
from deploy.lab.control import Controller, NodeSpec, PoolSpec  # noqa: E402
from deploy.lab.replicas import cable, leader, master_granted, replicas, switch_roles, target, wait_master  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402

NAMESPACE = "underlay-bench-failover"


def forward_api(plane: ControlPlane, ns: str) -> None:
    """The API server's port inside the rig's management namespace (in this process, threads)."""
    port = int(plane.server.rsplit(":", 1)[1])
    listener = tcpforward.listen_in(ns, port)
    threading.Thread(target=tcpforward.serve, args=(listener, port), daemon=True).start()


def prepare(kube: Kube, plane: ControlPlane) -> None:
    from kubernetes.config import new_client_from_config

    with new_client_from_config(str(plane.kubeconfig)) as api:
        crds.install(api)
    kube.create(NAMESPACES.path(), {"metadata": {"name": NAMESPACE}})
    kube.create(NODES.path(), {"metadata": {"name": "n1"}})
    kube.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "bench"},
                                 "spec": {"subnet": "198.18.0.0/22", "ips": ["198.18.1.1-198.18.3.250"], "default": True}})


def place(controller: Controller, count: int) -> list[dict]:
    return [controller.request("POST", "/v1/nodes/n1/pods", {
        "container_id": f"c{i}", "ifname": "eth0", "namespace": "bench", "name": f"p{i}", "mode": "macvlan"}, node="n1")
        for i in range(count)]


def one_run(rig: Rig, bridge: str, pair: list[Controller], pod_ip: str, ext) -> tuple[float, float, int, str]:
    old = process.wait_until(lambda: leader(pair), timeout=60, what="a leader")
    new = pair[1] if old is pair[0] else pair[0]
    process.wait_until(lambda: switch_roles(rig.ovs, bridge).get(target(new)) == "slave", timeout=30,
                       what="the follower to be slave")
    ping = subprocess.Popen(netns.exec_argv(ext.netns, ["ping", "-n", "-q", "-i", "0.01", pod_ip]),
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # pings before the kill too
    killed, killed_at = time.monotonic(), time.time()
    old.stop(kill=True)
    ready = process.wait_until(lambda: new.ready() and time.monotonic(), timeout=120, what="the new leader ready")
    mastered = process.wait_until(lambda: master_granted(new, after=killed_at), timeout=30, what="the master role")
    wait_master(rig.ovs, bridge, new, timeout=30)  # Open vSwitch's own view agrees (its table lags by seconds)
    flow_mods = new.health()["stats"]["flow_mods"]
    time.sleep(1)
    ping.send_signal(2)
    output, _ = ping.communicate(timeout=10)
    loss = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    old.start(timeout=60)
    return mastered - killed_at, ready - killed, flow_mods, f"{loss.group(1)} sent, {loss.group(2)} received" if loss else output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--lease", type=float, nargs=3, default=(15, 10, 2), metavar=("DURATION", "DEADLINE", "RETRY"))
    args = parser.parse_args()
    lease = dict(zip(("lease_duration", "renew_deadline", "retry_period"), args.lease))
    plane = ControlPlane.temporary().start()
    kube = Kube.connect(kubeconfig=str(plane.kubeconfig))
    try:
        prepare(kube, plane)
        with Rig() as rig:
            bridge = rig.add_bridge()
            n1 = rig.add_host("n1", bridge, cidr="198.18.0.11/22")
            ext = rig.add_host("ext", bridge, cidr="198.18.0.2/22")
            forward_api(plane, rig.mgmt_ns)
            dpid = int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)
            pair = replicas(2, workdir=rig.workdir, ns=rig.mgmt_ns, nodes={"n1": NodeSpec("n1", dpid=dpid, port=n1.ofport)},
                            trusted={dpid: (ext.ofport,)}, pool=PoolSpec("198.19.255.0/24"), kubeconfig=plane.kubeconfig,
                            lease_namespace=NAMESPACE, lease=lease)
            cable(rig.ovs, bridge, pair)
            for controller in pair:
                controller.start(timeout=60)
            first = process.wait_until(lambda: leader(pair), timeout=60, what="a leader")
            process.wait_until(lambda: first.health().get("connected"), timeout=30, what="the switch")
            first.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip}, node="n1")
            pods = place(first, args.pods)
            pod = rig.add_macvlan_pod("pod", n1, cidr=f"{pods[0]['ip']}/22", mac=pods[0]["mac"])
            assert ext.ping(pod.ip or ""), "the pod does not answer before the failover"
            print(f"failover, {args.pods} pods, lease {args.lease[0]:g}/{args.lease[1]:g}/{args.lease[2]:g} s:", flush=True)
            mastered, ready = [], []
            for run in range(args.runs):
                master_s, ready_s, flow_mods, pings = one_run(rig, bridge, pair, pod.ip or "", ext)
                mastered.append(master_s)
                ready.append(ready_s)
                print(f"  run {run + 1}: master on the switch {master_s:.2f} s after the kill, ready {ready_s:.2f} s; "
                      f"new leader's flow-mods {flow_mods}; pings {pings}", flush=True)
            print(f"  kill -> master: median {statistics.median(mastered):.2f} s, min {min(mastered):.2f}, "
                  f"max {max(mastered):.2f}; kill -> ready: median {statistics.median(ready):.2f} s")
            for controller in pair:
                controller.stop()
    finally:
        kube.close()
        plane.stop()


if __name__ == "__main__":
    main()
