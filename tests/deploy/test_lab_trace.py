"""`underlayctl trace` against the real lab: it explains a reachable pod, and after the pod's flows
are deleted by hand on the switch it names the table that drops the packet and says the
controller will repair it, which the controller then does.

Why this is deterministic: the lab runs without the controller's drift audit (audit_interval 0), so
the controller repairs the switch only when it reconnects or when a read of its flows with
`repair=true` (what `underlayctl trace` sends) finds them differing. `underlayctl trace` runs
ofproto/trace (which only simulates) before it reads the switch's flows through the controller, so
the packets are traced on the switch as the deletion left it, and the repair starts only after
that read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from labcli import lab_cli, status

from deploy.lab import netns
from deploy.lab.lab import Lab
from deploy.lab.labtrace import run_trace

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Any:
    state_dir = tmp_path_factory.mktemp("tracelab")
    lab = Lab(state_dir, progress=lambda _: None)
    try:
        lab.up(nodes=2, pods_per_node=1, audit_interval=0)  # no drift audit: only the trace's read repairs
        yield lab, status(lab_cli(state_dir))
    finally:
        lab.down()


def trace(lab: Lab, target: str, *extra: str, status: int = 0) -> dict[str, Any]:
    """`underlayctl --json trace TARGET EXTRA...`: its answer; its exit status must be `status`."""
    proc = run_trace(lab, target, *extra, json=True)
    assert proc.returncode == status, proc.stderr or proc.stdout
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def pod_flows(lab: Lab, bridge: str, pod: dict[str, Any]) -> list[str]:
    """The switch's flows that name the pod's address or MAC, without counters."""
    dump = lab.rig.ovs.ofctl("dump-flows", bridge, "--no-stats").splitlines()[1:]
    return sorted(line.strip() for line in dump if pod["ip"] in line or pod["mac"] in line)


def test_trace_explains_a_reachable_pod(lab):
    lab, state = lab
    pod = state["pods"][0]
    external = state["external"]
    answer = trace(lab, pod["name"])

    assert (answer["ip"], answer["mac"], answer["node"], answer["port"]) == (pod["ip"], pod["mac"], pod["node"],
                                                                             pod["port"])
    assert answer["in_sync"] is True and all(flow["on_switch"] for flow in answer["desired"])
    assert sorted({flow["role"] for flow in answer["desired"]}) == ["admit", "answer", "forward", "owner_pass"]
    external_port = int(lab.rig.ovs.vsctl("get", "interface", f"{lab.prefix}p1", "ofport"))
    assert answer["from_port"] == external_port  # the first trusted port: the external host's
    assert [leg["outcome"] for leg in answer["trace"]] == ["answered", "delivered", "delivered"]
    assert answer["trace"][1]["ports"] == [pod["port"]]
    assert answer["trace"][1]["why"] == (f"reaches port {pod['port']} (table 2 (l2) flow dl_dst={pod['mac']}: "
                                         f"forward for default/{pod['name']})")  # named from its cookie
    assert answer["reachable"] is True
    assert answer["verdict"] == f"reachable from port {external_port}: ARP answered by the switch, IPv4 there and back"
    assert netns.run(external["netns"], ["ping", "-n", "-c", "1", "-W", "2", pod["ip"]], check=False).returncode == 0


def test_from_another_nodes_port_with_that_nodes_address(lab):
    lab, state = lab
    pod, other = state["pods"][0], next(n for n in state["nodes"] if n["name"] != state["pods"][0]["node"])
    answer = trace(lab, pod["ip"], "--from-port", str(other["port"]))

    assert answer["reachable"] is True, answer["verdict"]
    assert answer["trace"][0]["packet"] == f"ARP who-has {pod['ip']} from {other['ip']} on port {other['port']}"
    assert answer["trace"][2]["why"].startswith(f"reaches port {other['port']} (table 2 (l2) flow dl_dst={other['mac']}")


def test_after_its_flows_are_deleted_trace_names_the_table_and_the_controller_repairs_it(lab):
    lab, state = lab
    pod, bridge = state["pods"][1], state["switch"]["bridge"]
    before = pod_flows(lab, bridge, pod)
    assert len(before) == 6
    for match in (f"arp,arp_tpa={pod['ip']}", f"arp,arp_spa={pod['ip']}", f"ip,nw_src={pod['ip']}",
                  f"dl_dst={pod['mac']}"):
        lab.rig.ovs.ofctl("del-flows", bridge, match)
    assert pod_flows(lab, bridge, pod) == []

    answer = trace(lab, pod["name"], status=3)

    assert answer["in_sync"] is False and not any(flow["on_switch"] for flow in answer["desired"])
    assert answer["reachable"] is False
    arp, pod_reply, there, back = answer["trace"]
    assert (arp["outcome"], arp["ports"].count(pod["port"])) == ("delivered", 1)  # flooded: nobody answers for it
    assert "the responder has no flow for" in arp["why"]
    for dropped in (pod_reply, back):
        assert (dropped["outcome"], dropped["table"], dropped["flow"]) == ("dropped", 0, "priority=0 actions=drop")
    reason = f"no port-security flow admits {pod['ip']} ({pod['mac']}) from port {pod['port']}"
    assert answer["verdict"] == (
        f"unreachable from port {answer['from_port']}: ARP reply {pod['ip']} -> 198.18.255.254 from port {pod['port']}: "
        f"dropped at table 0 (ingress) by its miss flow (priority=0 actions=drop): {reason}; "
        "the switch lacks 6 of its 6 desired flows: the controller will repair it")

    deadline = time.monotonic() + 10
    while pod_flows(lab, bridge, pod) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pod_flows(lab, bridge, pod) == before, "the controller did not repair the pod's flows"
    again = trace(lab, pod["name"])
    assert (again["reachable"], again["in_sync"]) == (True, True), again["verdict"]


def test_the_text_names_the_missing_flows_and_errors_name_what_to_do(lab):
    lab, state = lab
    pod = state["pods"][0]
    text = run_trace(lab, pod["ip"]).stdout
    assert text.splitlines()[0] == f"default/{pod['name']}  {pod['ip']}  MAC {pod['mac']}"
    assert "\nverdict: reachable from port " in text

    unknown = run_trace(lab, "198.18.0.250")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == ("underlayctl trace: 198.18.0.250: no placement has that address; "
                                      "`underlayctl pods` lists what the controller placed")

    no_port = run_trace(lab, pod["ip"], "--from-port", "99")
    assert no_port.returncode == 1
    assert no_port.stderr.strip().startswith("underlayctl trace: --from-port 99: switch 0000000000000001 (bridge ")
    assert no_port.stderr.strip().endswith(") has no such port; its ports are 1, 2, 3")
