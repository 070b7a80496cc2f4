"""The drift audit (controller/audit.py) against the rig's real Open vSwitch and a real controller:
a flow deleted by hand with `ovs-ofctl` is put back within `audit_interval` (plus a margin), with
one WARNING, and audits of a switch in sync send nothing. The segment is test_controller_ovs.py's."""

from __future__ import annotations

import time

import pytest

from deploy.lab.control import Controller
from tests.controller.test_controller_ovs import (_dpid, _flow_table, _segment, _wait_for, place, responder_packets,
                                                  who_has)

pytestmark = pytest.mark.rig


@pytest.fixture
def audited_segment(rig, bridge, make_host):
    """The pinned segment, its controller auditing the switch's flows every second."""
    yield from _segment(rig, bridge, make_host, pinned=True, audit_interval=1)


def test_a_responder_flow_deleted_by_hand_is_repaired_within_the_audit_interval(rig, bridge, audited_segment):
    """`ovs-ofctl del-flows` behind the controller's back: its next audit (within audit_interval,
    jittered down) reads the switch's flows, puts the lost ones back in one bundle and says so."""
    controller, n1, _, ext = audited_segment
    pod = place(controller, "n1", "web-0")
    operator = controller.operator_token
    switch = controller.request("GET", "/v1/switches", token=operator)["switches"][0]
    assert switch["audit_interval"] == 1 and switch["in_sync"] is True
    assert [r.sha for r in who_has(ext, pod["ip"])] == [pod["mac"]]  # and the switch learns ext (`seen`)
    flows_before, flow_mods = _flow_table(rig, bridge), controller.health()["stats"]["flow_mods"]
    audited = [switch["last_audit"]]
    for _ in range(3):  # audits of a switch in sync (by counts, mostly) change nothing
        audited.append(_wait_for(lambda: _audited_since(controller, operator, audited[-1])))
    assert None not in audited and controller.health()["stats"]["flow_mods"] == flow_mods

    rig.ovs.ofctl("del-flows", bridge, f"table=1,arp,arp_tpa={pod['ip']}")  # the pod's two responder flows
    deleted = time.monotonic()
    assert who_has(ext, pod["ip"]) == [], "the switch no longer answers for the pod"

    assert _wait_for(lambda: _responder_or_none(rig, bridge, pod["ip"]), timeout=1 + 5) is not None, \
        "repaired within audit_interval + a margin"
    assert time.monotonic() - deleted < 1 + 5
    assert [r.sha for r in who_has(ext, pod["ip"])] == [pod["mac"]]
    assert _flow_table(rig, bridge) == flows_before
    dpid = f"{_dpid(rig, bridge):016x}"
    repaired = _wait_for(lambda: [line for line in controller.logfile.read_text().splitlines()
                                  if "drift-repaired" in line] or None)
    assert repaired is not None and len(repaired) == 1 and " WARNING " in repaired[0], repaired
    assert repaired[0].endswith(f"drift-repaired switch={dpid} missing=2 unexpected=0 audit_interval=1.0")
    assert "converge-failed" not in controller.logfile.read_text()
    switch = controller.request("GET", "/v1/switches", token=operator)["switches"][0]
    assert switch["in_sync"] is True and switch["last_audit"] is not None


def _responder_or_none(rig, bridge: str, ip: str) -> int | None:
    try:
        return responder_packets(rig, bridge, ip)
    except AssertionError:
        return None


def _audited_since(controller: Controller, operator: str, last: str | None) -> str | None:
    """The switch's `last_audit` if it is later than `last`, else None."""
    audit = controller.request("GET", "/v1/switches", token=operator)["switches"][0]["last_audit"]
    return audit if audit is not None and (last is None or audit > last) else None
