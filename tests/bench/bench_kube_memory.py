"""The controller's memory with the Kubernetes store: N pods and N IPAllocations in its caches.

Run by hand as root: `.venv/bin/python tests/bench/bench_kube_memory.py [--pods 10000]
[--kubeconfig PATH]`. Not collected by pytest. Without --kubeconfig it starts its own control plane
(deploy/k8s/testenv.py) and stops it at the end.

The API server gets N pods (in one namespace, each with the labels, an owner reference and the
annotations a workload's pod has, plus an underlay.io annotation) and N IPAllocations (Bound, one
per pod). Then the real `underlay-controller` process starts in `store = "kubernetes"` mode: it lists
and watches pods, namespaces, StatefulSets, nodes, IPPools and IPAllocations, and loads the store
(the N allocations become the service's N pods, leases and placements). Measured once it answers
its health check (everything is loaded by then): VmRSS and VmHWM (the peak, during the lists), and
the time from exec to healthy. For comparison, the same controller on a SQLite file with the same N
pods, and the Kubernetes store on an empty cluster.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes.config import new_client_from_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "controller"))

from controller.kube.allocations import Phase, Slot, to_object  # noqa: E402
from controller.kube.client import IPALLOCATIONS, IPPOOLS, NAMESPACES, PODS, Kube  # noqa: E402
from controller.store import Mode, Pod, SqliteStore  # noqa: E402
from deploy.k8s import crds  # noqa: E402
from kubeenv import clean, pod_namespace  # noqa: E402

NAMESPACE = f"bench-memory-{os.getpid()}"
SUBNET = "198.18.0.0/17"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pod_record(i: int) -> Pod:
    ip = f"198.18.{i // 250}.{i % 250 + 2}"
    return Pod(f"container-{i:05d}", "eth0", "node", NAMESPACE, f"web-{i}", "bench", ip,
               f"02:55:c6:12:{i // 250:02x}:{i % 250 + 2:02x}", Mode.MACVLAN, created_at=1.7e9 + i)  # fmt: skip


def pod_object(i: int, owner_uid: str) -> dict[str, Any]:
    """What a Deployment's pod looks like to the API, roughly: labels, an owner, a few annotations."""
    return {
        "metadata": {
            "name": f"web-{i}",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b6d", "tier": "frontend"},
            "annotations": {"underlay.io/ippool": "bench", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
        },
        "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.2.3",
                                 "ports": [{"containerPort": 8080, "name": "http"}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                                 "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}]}]},
    }  # fmt: skip


def populate(kube: Kube, pods: int) -> None:
    pod_namespace(kube, NAMESPACE)
    owner = kube.create(f"/api/v1/namespaces/{NAMESPACE}/configmaps", {"metadata": {"name": "owner"}})
    kube.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "bench"},
                                 "spec": {"subnet": SUBNET, "default": True}})  # fmt: skip

    def one(i: int) -> None:
        kube.create(PODS.path(namespace=NAMESPACE), pod_object(i, owner["metadata"]["uid"]))
        record = pod_record(i)
        kube.create(IPALLOCATIONS.path(), to_object(record.ip, Slot(Phase.BOUND, "bench", record)))

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(pods)))
    print(f"created {pods} pods and {pods} IPAllocations in {time.perf_counter() - started:.0f} s", flush=True)


def config(store: str, *, kubeconfig: Path | None) -> str:
    lines = [f'store = "{store}"', "release_cooldown = 0",
             "[openflow]", 'host = "127.0.0.1"', f"port = {free_port()}",
             "[api]", 'host = "127.0.0.1"', f"port = {free_port()}",
             "[nodes.node]", 'token = "bench"']  # fmt: skip
    if kubeconfig is not None:
        lines += ["[kubernetes]", f'kubeconfig = "{kubeconfig}"']
    else:
        lines += ["[pools.bench]", f'subnet = "{SUBNET}"']
    return "\n".join(lines) + "\n"


def measure(name: str, toml: str, workdir: Path) -> None:
    """Start the controller, wait for its health check, print its memory, stop it."""
    path = workdir / f"{name}.toml"
    path.write_text(toml)
    port = int(toml.split("[api]")[1].split("port = ")[1].split()[0])
    started = time.perf_counter()
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "controller.main", "--config", str(path)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    try:
        while not healthy(port):
            if proc.poll() is not None:
                raise SystemExit(f"{name}: the controller exited:\n{(workdir / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.05)
        ready = time.perf_counter() - started
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        rss, peak = (int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
        print(f"  {name:34s} RSS {rss:6.1f} MiB  peak {peak:6.1f} MiB  healthy after {ready:5.1f} s", flush=True)
    finally:
        proc.terminate()
        proc.wait()


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--kubeconfig", type=Path, help="a running cluster to use (default: start one)")
    parser.add_argument("--keep", action="store_true", help="leave the pods and allocations (for a profile)")
    args = parser.parse_args()
    plane = None
    if args.kubeconfig is None:
        from deploy.k8s.testenv import ControlPlane

        plane = ControlPlane.temporary().start()
        args.kubeconfig = plane.kubeconfig
    kube = Kube.connect(kubeconfig=str(args.kubeconfig))
    try:
        with new_client_from_config(str(args.kubeconfig)) as api:
            crds.install(api)
        clean(kube)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            print(f"controller memory, {args.pods} pods:", flush=True)
            measure("kubernetes store, empty cluster", config("kubernetes", kubeconfig=args.kubeconfig), workdir)
            populate(kube, args.pods)
            store = SqliteStore(workdir / "store.sqlite")
            with store.transaction() as tx:
                for i in range(args.pods):
                    tx.put_pod(pod_record(i))
            store.close()
            measure(f"sqlite store, {args.pods} pods", config(str(workdir / "store.sqlite"), kubeconfig=None), workdir)
            measure(f"kubernetes store, {args.pods} pods", config("kubernetes", kubeconfig=args.kubeconfig), workdir)
    finally:
        if not args.keep and plane is None:  # a control plane of our own goes whole
            clean(kube)
            kube.delete(NAMESPACES.path(name=NAMESPACE))  # its pods go with it (the namespace controller)
        kube.close()
        if plane is not None:
            plane.stop()


if __name__ == "__main__":
    main()
