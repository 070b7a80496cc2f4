"""underlayctl against the lab's real controller: every verb through the real command line (the
lab's operator token, its CA, its management namespace), the switch's flows read through the
controller's own OpenFlow session, a flow deleted by hand on the real switch seen as a difference
(and gone after the controller reads the switch again), the fabric's SVG, and hostile clients of
the operator endpoints refused with reasons."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.lab import Lab

pytestmark = pytest.mark.rig
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("ctl-lab"), progress=lambda _: None)
    try:
        lab.up(nodes=2, pods_per_node=2, audit_interval=0)  # no drift audit: a hand deletion stays a difference
        yield lab
    finally:
        lab.down()


def ctl(lab: Lab, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`underlayctl --lab STATE_DIR ARGV` as a person beside the lab runs it."""
    proc = subprocess.run([sys.executable, "-m", "ctl.main", "--lab", str(lab.state_dir), *argv],
                          capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"underlayctl {' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return proc


def ctl_json(lab: Lab, *argv: str) -> Any:
    return json.loads(ctl(lab, "--json", *argv).stdout)


def test_switches_tell_the_switch_is_connected_and_in_sync(lab: Lab) -> None:
    (switch,) = ctl_json(lab, "switches")["switches"]
    assert (switch["dpid"], switch["connected"], switch["role"], switch["in_sync"]) == (lab.state.dpid, True, "equal", True)
    assert switch["flows_desired"] == switch["flows_actual"] > 20 and switch["last_convergence"]
    assert {"number": lab.state.external["port"], "role": "trusted"} in switch["ports"]
    text = ctl(lab, "switches").stdout.splitlines()
    assert text[1].split()[:3] == [f"{lab.state.dpid:016x}", "-", "yes"] and text[1].split()[-1] == "yes"


def test_nodes_and_pods_are_the_labs(lab: Lab) -> None:
    state = lab.state
    nodes = {n["name"]: n for n in ctl_json(lab, "nodes")["nodes"]}
    assert {name: (n["ip"], n["port"], n["pods"]) for name, n in nodes.items()} == {
        name: (node.ip, node.port, 2) for name, node in state.nodes.items()}
    pods = ctl_json(lab, "pods")["pods"]
    assert sorted((p["name"], p["node"], p["ip"], p["port"], p["state"]) for p in pods) == sorted(
        (name, pod.node, pod.ip, state.nodes[pod.node].port, "placed") for name, pod in state.pods.items())
    one = state.pods["node2-pod1"]
    lines = ctl(lab, "pods", one.ip).stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[:4] == ["default/node2-pod1", "eth0", "node2", one.ip]


def test_pools_count_the_labs_pods(lab: Lab) -> None:
    (pool,) = ctl_json(lab, "pools")["pools"]
    assert (pool["name"], pool["size"], pool["allocated"], pool["default"]) == ("default", 100, 4, True)
    line = ctl(lab, "pools", "--width", "25").stdout.splitlines()[1]
    assert line.split()[-2:] == ["[#........................]", "4%"]


def test_the_fabric_svg_shows_the_switch_nodes_and_every_pod_address(lab: Lab, tmp_path: Path) -> None:
    picture = tmp_path / "fabric.svg"
    proc = ctl(lab, "-o", str(picture), "graph")
    assert proc.stderr == f"wrote {picture}\n"
    root = ET.parse(picture).getroot()
    texts = {text.text for text in root.iter(f"{SVG}text")}
    state = lab.state
    assert {f"switch {state.dpid:016x}", "node node1", "node node2"} <= texts
    assert {pod.ip for pod in state.pods.values()} | {f"default/{name}" for name in state.pods} <= texts
    assert "in sync, flows" in " ".join(t for t in texts if t)
    fills = [polygon.get("fill") for polygon in root.iter(f"{SVG}polygon")]
    assert "#ffcdd2" not in fills and "#ffe0b2" not in fills  # nothing down, nothing drifted


def test_a_flow_deleted_by_hand_is_a_difference_until_the_controller_reads_the_switch_again(
        lab: Lab, tmp_path: Path) -> None:
    state = lab.state
    pod = state.pods["node1-pod2"]
    lab.rig.ovs.ofctl("del-flows", state.bridge, f"table=1,arp,arp_tpa={pod.ip}")

    (switch,) = ctl_json(lab, "switches")["switches"]
    assert switch["in_sync"] is False and switch["flows_actual"] == switch["flows_desired"] - 2
    diff = ctl(lab, "flows", "diff").stdout.splitlines()
    assert diff[0] == f"switch {state.dpid:016x}: 2 flows differ"
    assert all(line.startswith("  + responder(1) ") and f"arp_tpa={pod.ip} " in line for line in diff[1:3])
    actual = ctl_json(lab, "flows", "show", "--state", "actual", "--switch", hex(state.dpid))["switches"][0]["flows"]
    assert not [f for f in actual if f["table"] == "responder" and f["match"].get("arp_tpa") == pod.ip]
    svg = ctl(lab, "graph").stdout
    assert 'fill="#ffe0b2"' in svg  # the switch and that pod drawn orange

    lab.restart("controller")  # a controller that connects reads the switch and sends the difference
    assert ctl(lab, "flows", "diff").stdout == f"switch {state.dpid:016x}: in sync\n"


def test_hostile_clients_of_the_operator_endpoints_get_4xx_with_reasons(lab: Lab) -> None:
    controller = lab.controller()
    node_token = controller.nodes["node1"].token
    for path in ("/v1/switches", "/v1/switches/1/flows?state=actual", "/v1/pools", "/v1/nodes", "/v1/pods"):
        status, body = controller.raw_request("GET", path, token=node_token)
        assert (status, body["error"].split(":")[0]) == (403, "a node's token may not read operator endpoints"), path
        status, body = controller.raw_request("GET", path)
        assert status == 401 and body["error"].startswith("missing or invalid operator token"), path
    operator = controller.operator_token
    status, body = controller.raw_request("GET", "/v1/switches/not-a-dpid/flows", token=operator)
    assert (status, body["error"]) == (400, "dpid: 'not-a-dpid' is not a datapath id (e.g. 0x1, 1 or 0000000000000001)")
    status, body = controller.raw_request("GET", "/v1/switches/0x77/flows", token=operator)
    assert (status, body["error"]) == (404, "switch 0000000000000077: not known to the controller "
                                            "(known: 0000000000000001)")
    status, body = controller.raw_request("PUT", "/v1/nodes/node1", {"mac": "02:00:00:00:00:01", "ip": "198.18.0.50"},
                                          token=operator)
    assert (status, body["error"]) == (403, "an operator token is read-only: PUT needs the node's own token")


def test_the_command_line_names_what_to_fix(lab: Lab) -> None:
    proc = ctl(lab, "--token", "guess", "switches", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("underlayctl switches: the controller at https://127.0.0.1:6680 refused the token: "
                                  "missing or invalid operator token")
    assert "--token-file FILE or UNDERLAYCTL_TOKEN" in proc.stderr
    proc = ctl(lab, "--ca-file", "/etc/ssl/certs/ca-certificates.crt", "nodes", check=False)
    assert proc.returncode == 1 and "its certificate is not trusted" in proc.stderr and "--ca-file" in proc.stderr
    proc = ctl(lab, "--url", "https://127.0.0.1:6681", "pools", check=False)
    assert proc.returncode == 1 and "https://127.0.0.1:6681 is unreachable (Connection refused)" in proc.stderr
    proc = ctl(lab, "pods", "default/nope", check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "underlayctl pods: pod default/nope: no such pod holds an address (`underlayctl pods` lists them)\n")
    proc = ctl(lab, "flows", "diff", "--switch", "0x9", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("underlayctl flows: switch 0000000000000009: not known")
