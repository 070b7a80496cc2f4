"""Flows per switch of the real lab's fabric as pods are added: what the switches really hold.

Run by hand, as root: `.venv/bin/python tests/bench/bench_lab_fabric.py [--topology leaf-spine]
[--pods 0 4 8 16] [--nodes 2]`. Not collected by pytest. The pure counterpart (thousands of pods,
any number of switches, no root) is tests/bench/bench_fabric.py.

A lab (`underlay-lab up --topology ... --pods-per-node 0`) in a temporary state directory; pods are
added through the CNI plugin, spread over the nodes (so over the leaves), and after each step every
bridge's flows are counted with `ovs-ofctl dump-flows` once the controller reports every switch in
sync. Per step: the flows on each switch, and per switch the flows each added pod cost; linear
growth shows as the same cost per pod at every step, on every switch (a remote pod costs a responder
and a forward flow, a local one its port security too), never a term in switches².
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deploy.lab import topology  # noqa: E402
from deploy.lab.lab import Lab  # noqa: E402
from deploy.lab.process import wait_until  # noqa: E402


def flows_per_switch(lab: Lab) -> dict[str, int]:
    fabric = topology.parse(lab.state.topology)
    return {s.name: len(lab.rig.ovs.ofctl("dump-flows", "--no-stats", fabric.bridge(s.name, lab.prefix))
                        .splitlines()) for s in fabric.switches}


def in_sync(lab: Lab) -> bool:
    controller = lab.controller()
    switches = controller.request("GET", "/v1/switches", token=controller.operator_token)["switches"]
    return all(s["in_sync"] for s in switches if s["connected"])


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--topology", default="leaf-spine")
    args.add_argument("--pods", type=int, nargs="+", default=[0, 4, 8, 16])
    args.add_argument("--nodes", type=int, default=2)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fabric-") as directory:
        lab = Lab(Path(directory) / "lab", progress=lambda _: None)
        try:
            lab.up(nodes=opts.nodes, pods_per_node=0, topology_spec=opts.topology)
            report(lab, steps=sorted(opts.pods), nodes=opts.nodes)
        finally:
            lab.down()
    return 0


def report(lab: Lab, *, steps: list[int], nodes: int) -> None:
    names = [s.name for s in topology.parse(lab.state.topology).switches]
    print(f"{lab.state.topology}, {nodes} nodes: flows per switch (and per pod added since the last row)")
    print("  ".join(["pods".rjust(5), *(name.ljust(17) for name in names)]).rstrip())
    made, last = 0, None
    for target in steps:
        while made < target:
            made += 1
            lab.add_pod(f"b{made}", node=f"node{1 + (made - 1) % nodes}")
        wait_until(lambda: in_sync(lab), timeout=60, what="every switch in sync")
        counts = flows_per_switch(lab)
        cells = [f"{counts[name]:<5}" + (f" (+{(counts[name] - last[0][name]) / (made - last[1]):.1f}/pod)"
                                         if last and made > last[1] else "") for name in names]
        print("  ".join([f"{made:>5}", *(cell.ljust(17) for cell in cells)]).rstrip(), flush=True)
        last = (counts, made)


if __name__ == "__main__":
    sys.exit(main())
