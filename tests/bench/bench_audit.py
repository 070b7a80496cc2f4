"""What one drift audit (controller/audit.py) costs on a switch holding N pods' flows, on the rig's
real Open vSwitch, with the same calls the switch worker makes: the usual audit that only counts,
and the full one (every FULL_EVERY-th, or when a count is off) that reads all flows back and diffs.

Run by hand as root: `.venv/bin/python tests/bench/bench_audit.py [--pods 1000 10000] [--runs 5]`.
Not collected by pytest.

The flows of N macvlan pods on 8 node ports are installed through an OpenFlow session on the
bridge's management socket (tests/openflow/ofpeer.py). Then, per run, the steps of one audit of a
switch in sync (SwitchSession._converge_once with audit=True, nothing to repair):
- count: our flows per table the desired set uses (`SwitchSession._counts_agree`: one
  OFPMP_AGGREGATE each, and the per-table count of the desired set): all a usual audit does;
- read: the flow-stats request and every part of its reply, parsed by os-ken (as its event loop
  does in the controller), wall time;
- parse: `ofmsg.parse_flow_stats` (os-ken entries → `Flow`);
- desired: `DesiredFlows.update` with the unchanged state and `.flows`;
- diff: `openflow.diff.diff(installed, desired)`;
and ovs-vswitchd's CPU for the read (/proc). Then one responder flow is deleted by hand and the
diff must find exactly it (the bench checks what it measures). Times: median of `--runs`, ms;
"full ms" is read + parse + desired + diff.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "openflow"))

from bench_controller import cpu_seconds  # noqa: E402
from bench_flows import NODE_PORTS  # noqa: E402
from ofpeer import Peer, connected  # noqa: E402

from os_ken.ofproto import ofproto_v1_3_parser as parser  # noqa: E402

from deploy.lab.rig import Rig  # noqa: E402
from openflow import ofmsg  # noqa: E402
from openflow.diff import diff  # noqa: E402
from openflow.model import Placement, PortRole, SwitchPort, SwitchState  # noqa: E402
from openflow.pipeline import DesiredFlows  # noqa: E402

COOKIE = 0x55AA_0000_0000_0000
STEPS = ("read", "parse", "desired", "diff")


def state(pods: int) -> SwitchState:
    """N pods in 198.18.0.0/15 (the lab's range), spread over the node ports."""
    placements = tuple(Placement(f"198.{18 + (i >> 16)}.{i >> 8 & 0xFF}.{i & 0xFF}",
                                 f"02:00:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}",
                                 NODE_PORTS[i % len(NODE_PORTS)], f"bench/p{i}") for i in range(1, pods + 1))
    return SwitchState(dpid=1, cookie=COOKIE, ports=tuple(SwitchPort(p, PortRole.NODE) for p in NODE_PORTS),
                       placements=placements)


def counts_agree(switch: Peer, desired: DesiredFlows) -> bool:
    """The usual audit: our flows counted per table on the switch, against the desired set."""
    for table, count in Counter(flow.table for flow in desired.flows).items():
        (reply,) = switch.request(ofmsg.aggregate_request(switch.datapath, COOKIE, table=table),
                                  parser.OFPAggregateStatsReply)
        if reply.body.flow_count != count:
            return False
    return True


def one_audit(switch: Peer, desired: DesiredFlows, wanted: SwitchState, vswitchd: Path) -> dict[str, float]:
    """Both kinds of audit, step by step, and the switch's CPU for the full read. Seconds per step,
    the flows read, the drift the full read found and whether the counts agreed."""
    counting = time.perf_counter()
    agree = counts_agree(switch, desired)
    counted = time.perf_counter()
    cpu = cpu_seconds(vswitchd)
    started = time.perf_counter()
    entries = switch.flow_stats(COOKIE)
    read = time.perf_counter()
    cpu = cpu_seconds(vswitchd) - cpu
    installed = ofmsg.parse_flow_stats(entries)
    parsed = time.perf_counter()
    desired.update(wanted)
    flows = desired.flows
    built = time.perf_counter()
    to_delete, to_add = diff(installed, flows)
    done = time.perf_counter()
    return {"count": counted - counting, "read": read - started, "parse": parsed - read, "desired": built - parsed,
            "diff": done - built, "switch_cpu": cpu, "flows": len(installed), "drift": len(to_delete) + len(to_add),
            "agree": agree}


def bench(rig: Rig, bridge: str, pods: int, runs: int) -> None:
    wanted = state(pods)
    desired = DesiredFlows()
    desired.update(wanted)
    rig.ovs.ofctl("del-flows", bridge)
    vswitchd = rig.ovs.workdir / "ovs-vswitchd.pid"
    with connected(rig, bridge) as switch:
        switch.flow_mods(desired.flows)
        results = [one_audit(switch, desired, wanted, vswitchd) for _ in range(runs)]
        assert all(r["agree"] and r["drift"] == 0 for r in results), "in sync: an audit finds nothing"
        lost = [f for f in desired.flows if f.table == "responder" and dict(f.match).get("arp_tpa") == "198.18.0.1"]
        rig.ovs.ofctl("del-flows", bridge, "table=1,arp,arp_tpa=198.18.0.1")
        found = one_audit(switch, desired, wanted, vswitchd)
        assert not found["agree"] and found["drift"] == len(lost) > 0, "what was deleted by hand, both ways"
    ms = {step: statistics.median(r[step] for r in results) * 1000 for step in ("count", *STEPS, "switch_cpu")}
    full = sum(ms[step] for step in STEPS)
    print(f"{pods:>6} {results[0]['flows']:>7} {ms['count']:8.1f} " + " ".join(f"{ms[step]:8.1f}" for step in STEPS)
          + f" {full:8.1f} {ms['switch_cpu']:11.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with Rig() as rig:
        bridge = rig.add_bridge()  # no ports: the switch takes flows for ports it does not have
        print(f"{'pods':>6} {'flows':>7} {'count ms':>8} " + " ".join(f"{step + ' ms':>8}" for step in STEPS)
              + f" {'full ms':>8} {'switch ms':>11}")
        for pods in args.pods:
            bench(rig, bridge, pods, args.runs)


if __name__ == "__main__":
    main()
