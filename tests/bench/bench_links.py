"""Link failover time: pings every 10 ms across a fabric while a link on their path is cut and restored.

Run by hand as root: `.venv/bin/python tests/bench/bench_links.py [--runs 5]`. Not collected by
pytest. It makes its own rig: three bridges in a triangle (tests/controller/fabricrig.py), the real
controller, hosts on trusted ports of b and c whose frames cross the tree b-a-c. Each run: pings from
b to c every 10 ms; after 1 s the veth of a-b is set down (a port status on both ends: the link is
down at once, the tree becomes a-c-b, every switch gets one bundle); 2 s later it is set up again
(LLDP confirms it, the tree returns to b-a-c). Reported per run: pings lost at the cut, at the
return (each lost ping is 10 ms without connectivity), and the time from `ip link set down` until
GET /v1/topology shows the link down and the new tree.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "controller"))

from deploy.lab import netns  # noqa: E402
from deploy.lab.rig import Rig  # noqa: E402
from fabricrig import Fabric, all_up, build, wait_for  # noqa: E402

INTERVAL = 0.01


def pings(fabric: Fabric, seconds: float) -> subprocess.Popen[str]:
    hb, hc = fabric.hosts["b"], fabric.hosts["c"]
    count = int(seconds / INTERVAL)
    return subprocess.Popen(netns.exec_argv(hb.netns, ["ping", "-n", "-q", "-i", str(INTERVAL), "-c", str(count),
                                                       "-W", "1", hc.ip or ""]), stdout=subprocess.PIPE, text=True)


def lost(ping: subprocess.Popen[str]) -> int:
    output, _ = ping.communicate(timeout=30)
    found = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    if found is None:
        raise RuntimeError(f"ping said: {output}")
    return int(found.group(1)) - int(found.group(2))


def one_run(fabric: Fabric) -> tuple[int, int, float]:
    wait_for(lambda: all_up(fabric), timeout=15, what="all links up")
    ping = pings(fabric, 2.0)
    time.sleep(1.0)
    cut = time.monotonic()
    fabric.set_cable("a", 101, "down")
    wait_for(lambda: fabric.link("a", "b")["state"] == "down" and fabric.link("b", "c")["in_tree"], timeout=5,
             what="a-b down, b-c in the tree")
    seen = time.monotonic() - cut
    at_cut = lost(ping)
    ping = pings(fabric, 4.0)
    time.sleep(1.0)
    fabric.set_cable("a", 101, "up")
    wait_for(lambda: fabric.link("a", "b")["in_tree"], timeout=5, what="a-b back in the tree")
    at_return = lost(ping)
    return at_cut, at_return, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with Rig() as rig:
        fabric_run = build(rig, "bench-links", hosts=("b", "c"))
        fabric = next(fabric_run)
        try:
            assert fabric.hosts["b"].ping(fabric.hosts["c"].ip or "", count=2), "b does not reach c before the cut"
            print(f"link failover, pings every {INTERVAL * 1000:g} ms b -> c across a-b:", flush=True)
            cuts, returns, seen = [], [], []
            for run in range(args.runs):
                at_cut, at_return, noticed = one_run(fabric)
                cuts.append(at_cut)
                returns.append(at_return)
                seen.append(noticed)
                print(f"  run {run + 1}: lost {at_cut} pings at the cut ({at_cut * INTERVAL * 1000:.0f} ms), "
                      f"{at_return} at the return; link down in the API {noticed * 1000:.0f} ms after the cut",
                      flush=True)
            print(f"  at the cut: median {statistics.median(cuts)} pings lost, max {max(cuts)}; at the return: median "
                  f"{statistics.median(returns)}, max {max(returns)}; down in the API: median "
                  f"{statistics.median(seen) * 1000:.0f} ms")
        finally:
            fabric_run.close()


if __name__ == "__main__":
    main()
