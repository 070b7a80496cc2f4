"""`underlayctl trace` without a switch to trace on: who and where, the flows, what the switch lacks.

The REST answers are the controller's own JSON (controller.opsapi.flow_json of the pipeline's
flows); tests/deploy/test_lab_trace.py runs the verb against the real lab."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controller.opsapi import flow_json
from ctl.trace import TraceFailed, render, to_json, trace
from openflow.pipeline import desired_flows

sys.path.insert(0, str(Path(__file__).parents[1] / "openflow"))
from ofstates import P1, PORT_N1, PORT_ROUTER, two_node_state  # noqa: E402

FLOWS = [flow_json(f, {}) for f in desired_flows(two_node_state())]
PLACEMENTS = [{"ip": p.ip, "mac": p.mac, "port": p.port, "dpid": 1, "owner": p.owner,
               "node": p.owner.split("/")[1] if p.owner.startswith("node/") else "n1"}
              for p in two_node_state().placements]


class Unavailable(Exception):
    pass


def controller(actual: list[dict] | None = None):  # type: ignore[no-untyped-def]
    """A `get` answering as the controller would; `actual=None`: the switch is not connected."""
    def get(path: str) -> dict:
        if path == "/v1/placements":
            return {"placements": PLACEMENTS}
        assert path.startswith("/v1/switches/0x1/flows?state="), path
        if path.endswith("=desired"):
            return {"flows": FLOWS}
        if actual is None:
            raise Unavailable("switch 0000000000000001 is not connected: its flows cannot be read")
        return {"flows": actual}
    return get


def test_a_pod_in_sync_is_shown_with_its_flows_and_no_verdict_without_a_switch() -> None:
    report = trace(controller(FLOWS), "default/mac-1")
    assert (report.subject.ip, report.subject.mac, report.subject.port, report.node) == ("198.18.0.11", P1, PORT_N1, "n1")
    assert report.from_port == PORT_ROUTER and report.drift is not None and report.drift.in_sync
    assert report.reachable is None
    assert report.verdict == "not traced (give --ovs-rundir, the switch's run directory, to trace packets)"
    text = render(to_json(report))
    assert text.startswith(f"default/mac-1  198.18.0.11  MAC {P1}\nnode n1, switch 0000000000000001 port {PORT_N1}")
    assert "flows the controller wants for it (6):" in text and "the switch holds 6 of them (all)" in text
    assert "  answer         responder priority=100 eth_dst=ff:ff:ff:ff:ff:ff" in text


def test_missing_flows_are_marked_and_the_repair_announced() -> None:
    actual = [f for f in FLOWS if f["match"].get("arp_tpa") != "198.18.0.11"]
    report = trace(controller(actual), "198.18.0.11")
    assert report.drift is not None and len(report.drift.missing) == 3  # responder x2, the probe's admission
    assert report.verdict.endswith("; the switch lacks 3 of its 6 desired flows: the controller will repair it")
    assert render(to_json(report)).count("\n  MISSING ") == 3
    assert to_json(report)["in_sync"] is False


def test_a_switch_that_cannot_be_read_does_not_fail_the_trace() -> None:
    report = trace(controller(None), "198.18.0.11", api_errors=(Unavailable,))
    assert report.actual is None and report.verdict.endswith(
        "what the switch holds is unknown: switch 0000000000000001 is not connected: its flows cannot be read")


def test_a_bad_run_directory_is_said_in_the_verdict(tmp_path: Path) -> None:
    report = trace(controller(FLOWS), "198.18.0.11", ovs_rundir=tmp_path)
    assert report.verdict.startswith(f"not traced: --ovs-rundir {tmp_path}: no ovs-vswitchd control socket there")


@pytest.mark.parametrize(("query", "says"), [
    ("198.18.0.77", "198.18.0.77: no placement has that address"),
    ("nobody", "nobody: no placement has that name"),
])
def test_what_is_not_placed_is_named(query: str, says: str) -> None:
    with pytest.raises(TraceFailed, match=says):
        trace(controller(FLOWS), query)


def test_an_ipv6_address_shows_its_flows_and_says_what_is_traced(tmp_path: Path) -> None:
    from dataclasses import replace

    from openflow.model import Placement

    state = two_node_state()
    state = replace(state, placements=(*state.placements, Placement("fd00:18::11", P1, PORT_N1, "default/mac-1")))
    flows = [flow_json(f, {}) for f in desired_flows(state)]
    rows = [*PLACEMENTS, {"ip": "fd00:18::11", "mac": P1, "port": PORT_N1, "dpid": 1, "owner": "default/mac-1",
                          "node": "n1"}]

    def get(path: str) -> dict:
        return {"placements": rows} if path == "/v1/placements" else {"flows": flows}

    report = trace(get, "fd00:18::11", ovs_rundir=tmp_path)
    assert {c.role.name for c in report.desired} == {"ADMIT", "GUARD", "OWNER_PASS", "ANSWER", "FORWARD"}
    assert report.verdict.startswith("not traced: packets are traced for IPv4 addresses (ARP and ICMP)")
    assert trace(get, "default/mac-1").subject.ip == "198.18.0.11"  # a dual-stack pod by name: its IPv4 address


def test_exit_status_3_when_unreachable_or_flows_are_missing() -> None:
    from ctl.verbs.trace import exit_status

    assert exit_status(to_json(trace(controller(FLOWS), "198.18.0.11"))) == 0  # in sync, not traced
    missing = [f for f in FLOWS if f["match"].get("arp_tpa") != "198.18.0.11"]
    assert exit_status(to_json(trace(controller(missing), "198.18.0.11"))) == 3
    assert exit_status({"reachable": False, "in_sync": True}) == 3


@pytest.mark.parametrize("bad", [{"mac": "02:00:00:00:00:01 --x"}, {"ip": "198.18.0.11,in_port=1"}, {"port": 0}])
def test_a_malformed_placement_from_the_controller_is_refused(bad: dict) -> None:
    row = {**PLACEMENTS[2], **bad}

    def get(path: str) -> dict:
        return {"placements": [row]} if path == "/v1/placements" else {"flows": FLOWS}

    with pytest.raises(TraceFailed, match="the controller answered a malformed placement"):
        trace(get, "default/mac-1")
