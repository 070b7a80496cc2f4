"""The test control plane (deploy/k8s/testenv.py): time from start to a ready apiserver, to the
`default` ServiceAccount (the controller-manager at work), and each process's resident memory.

Run by hand: `.venv/bin/python tests/bench/bench_k8s.py [--runs 5]`. Not collected by pytest. The
load average is printed with the numbers: on a shared 2-core machine the ready time is mostly waiting
for CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402
from kubernetes.config import new_client_from_config  # noqa: E402

from deploy.k8s.pytest_plugin import wait_for_service_account  # noqa: E402
from deploy.k8s.testenv import ControlPlane  # noqa: E402


def one_run() -> tuple[float, float, dict[str, int]]:
    plane = ControlPlane.temporary()
    try:
        started = time.monotonic()
        plane.start()
        ready = time.monotonic() - started
        with new_client_from_config(str(plane.kubeconfig)) as api:
            wait_for_service_account(client.CoreV1Api(api), "default")
        account = time.monotonic() - started
        return ready, account, plane.rss()
    finally:
        plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    ready = [r[0] for r in runs]
    account = [r[1] for r in runs]
    print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs")
    print(f"apiserver ready:            median {statistics.median(ready):.2f} s (min {min(ready):.2f}, max {max(ready):.2f})")
    print(f"default ServiceAccount:     median {statistics.median(account):.2f} s")
    for name in runs[0][2]:
        sizes = [r[2][name] / 2**20 for r in runs if name in r[2]]
        print(f"RSS {name + ':':26} median {statistics.median(sizes):.0f} MiB")


if __name__ == "__main__":
    main()
