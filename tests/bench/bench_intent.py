"""What intent costs an ADD: resolving a pod's pool, address and identity from cluster objects.

Run by hand: `.venv/bin/python tests/bench/bench_intent.py [--pods 5000] [--pools 4 64]`. No root.
Not collected by pytest.

Measured: `cluster.resolve` alone (the ClusterView's reads are dict lookups here, as a warm watch
cache's are), for a plain pod, a pod with a fixed-address annotation and a StatefulSet pod with an
ip-list; then `Service.place_pods` per pod with and without a cluster view (a SQLite store on tmpfs
synchronous=OFF, the same both ways; the fabric only records: no switch). CPU time of this process
(the machine is shared: wall time would measure the neighbours too).

Dual stack: `Service.place_pods` then `release` per pod (an ADD and its DEL) in an IPv4-only pool
and in a dual-stack pool (the same /16 plus an IPv6 /64, whose range is never walked), no cluster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "controller")]

from controller import cluster, intent  # noqa: E402
from controller.config import PoolConfig  # noqa: E402
from controller.ipam import Pool  # noqa: E402
from controller.selectors import pool_rules  # noqa: E402
from controller.service import PodRequest, Service  # noqa: E402
from controller.store import Mode, SqliteStore  # noqa: E402
from ctlfakes import DictCluster, RecordingFabric, make_config  # noqa: E402

STS_UID = "5f0c7a4e-0000-4000-8000-0000000000aa"


def pools(count: int) -> dict[str, PoolConfig]:
    """`count` pools: one default /16 for the pods, the others with namespace and node selectors."""
    found = {"lan": PoolConfig("lan", "198.18.0.0/16", (("198.18.0.10", "198.18.255.250"),), default=True)}
    for index in range(1, count):
        name = f"p{index}"
        found[name] = PoolConfig(name, f"198.19.{index}.0/24", ((f"198.19.{index}.10", f"198.19.{index}.250"),),
                                 rules=pool_rules({"namespaceSelector": {"matchLabels": {"team": name}},
                                                   "nodeSelector": {"matchLabels": {"rack": "r1"}}}))
    return found


def view_with(pods: int) -> DictCluster:
    view = DictCluster()
    view.namespaces["default"] = {"metadata": {"name": "default", "labels": {"team": "p1"}}}
    view.nodes["n1"] = {"metadata": {"name": "n1", "labels": {"rack": "r1"}}}
    view.add_statefulset("db", replicas=1, uid=STS_UID, annotations={"underlay.io/ip-list": "198.18.200.10"})
    for index in range(pods):
        view.add_pod(f"web-{index}", labels={"app": "web"})
        view.add_pod(f"fixed-{index}", annotations={"underlay.io/ip": f"198.18.{1 + index // 250}.{index % 250 + 1}"})
    view.add_pod("db-0", owner={"kind": "StatefulSet", "name": "db", "uid": STS_UID})
    return view


def per_call(calls: int, call: Callable[[int], object], runs: int = 3) -> float:
    """Median microseconds per call over `runs` runs."""
    results = []
    for _ in range(runs):
        started = time.process_time()
        for index in range(calls):
            call(index)
        results.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(results)


def resolve_costs(pods: int, pool_count: int) -> dict[str, float]:
    view = view_with(pods)
    views = [Pool.from_config(config) for config in pools(pool_count).values()]

    def resolve(name: str) -> Callable[[int], object]:
        return lambda index: cluster.resolve(view, cluster.Ask("default", name.format(index), None, "n1",
                                                               intent.Request("eth0")), pools=views)

    return {"plain pod": per_call(pods, resolve("web-{}")), "fixed address": per_call(pods, resolve("fixed-{}")),
            "StatefulSet pod": per_call(pods, resolve("db-0"))}


def place_costs(pods: int, pool_count: int) -> dict[str, float]:
    results = {}
    for label, with_view in (("without a cluster", False), ("with a cluster", True)):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
            view = view_with(pods)
            config = replace(make_config(), pools=pools(pool_count))
            service = Service(SqliteStore(Path(directory) / "s.sqlite", synchronous="OFF"), config, now=time.time,
                              fabric=RecordingFabric(), cluster=view if with_view else None)
            service.register_node("n2", mac="02:00:00:00:01:02", ip="198.17.0.12")

            def place(index: int) -> object:
                request = PodRequest(f"c{index}", "eth0", "default", f"web-{index}", Mode.MACVLAN)
                return service.place_pods("n2", [request])

            started = time.process_time()
            for index in range(pods):
                place(index)
            results[label] = (time.process_time() - started) / pods * 1e6
            service.store.close()
    return results


def family_costs(pods: int) -> dict[str, float]:
    """ADD + DEL per pod, IPv4 only against dual stack (one address of each family per ADD)."""
    results = {}
    v4 = {"subnet": "198.18.0.0/16", "ranges": ["198.18.0.10-198.18.255.250"], "gateway": "198.18.0.1", "default": True}
    for label, pool in (("ADD+DEL IPv4 only", v4),
                        ("ADD+DEL dual stack", {**v4, "subnet6": "fd00:18::/64", "gateway6": "fd00:18::1"})):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
            service = Service(SqliteStore(Path(directory) / "s.sqlite", synchronous="OFF"), make_config(pools={"p": pool}),
                              now=time.time, fabric=RecordingFabric())
            service.register_node("n2", mac="02:00:00:00:01:02", ip="198.17.0.12")

            def cycle(index: int) -> object:
                service.place_pods("n2", [PodRequest(f"c{index}", "eth0", "default", f"web-{index}", Mode.MACVLAN)])
                return service.release("n2", f"c{index}", "eth0")

            results[label] = per_call(pods, cycle, runs=1)
            assert len(service.allocations()) == 0
            service.store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--pools", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--families", action="store_true", help="only the IPv4 against dual-stack lines")
    args = parser.parse_args()
    if args.families:
        print(f"{args.pods} pods, one pool")
        for what, micros in family_costs(args.pods).items():
            print(f"  {what:<20} {micros:8.1f} us per pod")
        return
    for pool_count in args.pools:
        print(f"{pool_count} pools, {args.pods} pods")
        for what, micros in {**resolve_costs(args.pods, pool_count), **place_costs(args.pods, pool_count)}.items():
            print(f"  {what:<20} {micros:8.1f} us per pod")


if __name__ == "__main__":
    main()
