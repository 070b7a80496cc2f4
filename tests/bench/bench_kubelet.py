"""Pod-ready latency on the lab's real kubelet with our CNI plugin (`underlay-lab up --kubernetes --kubelet`):
from the Pod's create call to the watch showing it with an address, and to it Ready, one pod at a
time; then a burst of pods created at once, to all Ready.

Run by hand: `.venv/bin/python tests/bench/bench_kubelet.py [--pods 20] [--burst 10] [--image ARCHIVE ...]`
(the images default to deploy/image's archives). Not collected by pytest. The load average is printed
with the numbers: on a shared 2-core machine most of a pod's time is waiting for CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402

from deploy.lab.kubenode import PAUSE_IMAGE  # noqa: E402
from deploy.lab.lab import Lab  # noqa: E402

NODE = "node1"


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"bench": "kubelet"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE}, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}]}}


def ready(obj: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in obj.status.conditions or [])


def create_and_wait(core: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    """Create the pods at once; per pod, seconds from its create call to an address, and to Ready."""
    listed = core.list_namespaced_pod("default", label_selector="bench=kubelet")
    started: dict[str, float] = {}
    for name in names:
        started[name] = time.monotonic()
        core.create_namespaced_pod("default", pod(name))
    addressed: dict[str, float] = {}
    done: dict[str, tuple[float, float]] = {}
    for event in watch.Watch().stream(core.list_namespaced_pod, "default", label_selector="bench=kubelet",
                                      resource_version=listed.metadata.resource_version, timeout_seconds=300):
        obj, now = event["object"], time.monotonic()
        name = obj.metadata.name
        if name not in started or name in done:
            continue
        if obj.status.pod_ip and name not in addressed:
            addressed[name] = now - started[name]
        if ready(obj):
            done[name] = (addressed.get(name, now - started[name]), now - started[name])
        if len(done) == len(names):
            break
    return done


def delete_all(core: Any) -> None:
    core.delete_collection_namespaced_pod("default", label_selector="bench=kubelet", grace_period_seconds=0)
    while core.list_namespaced_pod("default", label_selector="bench=kubelet").items:
        time.sleep(0.2)


def summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (f"{label:28} median {statistics.median(values) * 1000:6.0f} ms  p90 {p90 * 1000:6.0f} ms  "
            f"max {max(values) * 1000:6.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20, help="pods created one at a time")
    parser.add_argument("--burst", type=int, default=10, help="pods created at once, after")
    parser.add_argument("--image", type=Path, action="append", default=[], dest="images")
    args = parser.parse_args()
    if not args.images:
        from deploy.image import build

        args.images = list(build.ensure(log=lambda line: None).values())
    state_dir = Path(tempfile.mkdtemp(prefix="bench-kubelet-"))
    lab = Lab(state_dir, progress=lambda line: None)
    try:
        started = time.monotonic()
        lab.up(nodes=1, pods_per_node=0, kubernetes=True, kubelet=True, images=args.images)
        up = time.monotonic() - started
        with lab.kube.api() as api:
            core: Any = client.CoreV1Api(api)
            one = [create_and_wait(core, [f"one-{i}"])[f"one-{i}"] for i in range(args.pods)]
            delete_all(core)
            started = time.monotonic()
            burst = create_and_wait(core, [f"burst-{i}" for i in range(args.burst)])
            burst_all = time.monotonic() - started
            delete_all(core)
    finally:
        lab.down()
        state_dir.rmdir()
    print(f"load average {os.getloadavg()[0]:.1f}; lab up with a Ready real node in {up:.1f} s")
    print(summary(f"one at a time ({args.pods}), address", [a for a, _ in one]))
    print(summary(f"one at a time ({args.pods}), Ready", [r for _, r in one]))
    print(summary(f"burst of {args.burst}, Ready", [r for _, r in burst.values()]))
    print(f"burst of {args.burst}: all Ready {burst_all:.2f} s after the first create")


if __name__ == "__main__":
    main()
