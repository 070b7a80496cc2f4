"""What desired-flow computation costs per pod: IPv4-only pods vs dual-stack ones, same run.

Run by hand: `.venv/bin/python tests/bench/bench_flows.py [--pods 1000 10000] [--runs 5]`.
Not collected by pytest. Pure computation: no switch, no root.

A dual-stack pod is two placements (one MAC, one port); its IPv6 placement brings the ND responder,
IPv6 port security and the RA guard. Per kind of pod, N macvlan pods on 8 node ports:
- build: `placement_flows` for each pod, cache cleared (what an allocation costs the first time);
- encode: the FlowMod bytes of those flows (`encode.flow_mod`: what the switch worker sends);
- add one: `DesiredFlows.update` with one pod more on a switch holding N (the controller's path
  after a pod ADD), and the flow-mods that produces;
- full: `desired_flows(state)` for the N pods with the cache warm (a reconnect's rebuild).
Times are the best of `--runs`, CPU µs per pod (add one: per update).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from openflow import encode  # noqa: E402
from openflow.model import Placement, PortRole, SwitchPort, SwitchState  # noqa: E402
from openflow.pipeline import DesiredFlows, desired_flows, placement_flows  # noqa: E402

COOKIE = 0x0BE7_C400_0000_0001
NODE_PORTS = tuple(range(1, 9))
FAMILIES = {"ipv4": (4,), "dual-stack": (4, 6), "ipv6": (6,)}


def pod(i: int, family: int) -> Placement:
    mac = f"02:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:01"
    ip = f"10.{i >> 16 & 0xFF}.{i >> 8 & 0xFF}.{i & 0xFF}" if family == 4 else f"fd00::1:{i >> 16:x}:{i & 0xFFFF:x}"
    return Placement(ip, mac, NODE_PORTS[i % len(NODE_PORTS)], f"bench/p{i}")


def pods(count: int, families: tuple[int, ...], start: int = 0) -> tuple[Placement, ...]:
    return tuple(pod(i, family) for i in range(start, start + count) for family in families)


def state(placements: tuple[Placement, ...]) -> SwitchState:
    return SwitchState(dpid=1, cookie=COOKIE, ports=tuple(SwitchPort(p, PortRole.NODE) for p in NODE_PORTS),
                       placements=frozenset(placements))


def best(runs: int, work: Callable[[], object]) -> float:
    """The least CPU time of this process `work` took (CPU, not wall: on a shared machine waiting for
    a core is not a cost of the work)."""
    times = []
    for _ in range(runs):
        began = time.process_time()
        work()
        times.append(time.process_time() - began)
    return min(times)


def measure(count: int, families: tuple[int, ...], runs: int) -> dict[str, float]:
    placements = pods(count, families)
    per_pod = len(families)

    def build() -> None:
        placement_flows.cache_clear()
        for placement in placements:
            placement_flows(placement, False, COOKIE)

    build_s = best(runs, build)
    flows = [f for p in placements for f in placement_flows(p, False, COOKIE)]
    encode_s = best(runs, lambda: [encode.flow_mod(f) for f in flows])

    base = state(placements)
    grown = replace(base, placements=base.placements | frozenset(pods(1, families, start=count)))
    tracker = DesiredFlows()
    tracker.update(base)
    added: list[int] = []

    def add_one() -> None:
        appeared, _ = tracker.update(grown)
        added.append(len(appeared))
        tracker.update(base)

    add_s = best(runs, add_one) / 2  # each round adds the pod and takes it away again
    full_s = best(runs, lambda: desired_flows(base))
    return {"flows/pod": len(flows) / count, "build µs": build_s / count * 1e6,
            "encode µs": encode_s / count * 1e6, "add one µs": add_s * 1e6, "mods/add": added[0],
            "full µs": full_s / count * 1e6, "placements/pod": per_pod}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    columns = ("flows/pod", "build µs", "encode µs", "add one µs", "mods/add", "full µs")
    print(f"{'pods':>6} {'kind':>10} " + " ".join(f"{c:>11}" for c in columns))
    for count in args.pods:
        for kind, families in FAMILIES.items():
            row = measure(count, families, args.runs)
            print(f"{count:>6} {kind:>10} " + " ".join(f"{row[c]:>11.1f}" for c in columns))


if __name__ == "__main__":
    main()
