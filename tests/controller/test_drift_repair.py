"""Flows deleted on the switch behind the controller's back: an operator's read of what the switch
holds (GET /v1/switches/<dpid>/flows?state=actual, what `underlayctl trace` does) finds the
difference, and the controller repairs it, with the real controller and the rig's Open vSwitch."""

from __future__ import annotations

import pytest
from test_controller_ovs import _flow_table, _wait_for, place, segment, who_has  # noqa: F401 (a fixture)

from openflow.tables import SEEN, table_id

pytestmark = pytest.mark.rig


def controllers_flows(rig, bridge: str) -> list[str]:
    """The bridge's flows but the `seen` records the switch learns by itself."""
    return [line for line in _flow_table(rig, bridge) if f"table={table_id(SEEN)}," not in line]


def test_a_read_that_finds_deleted_flows_makes_the_controller_repair_them(rig, bridge, segment):
    controller, _, _, ext = segment
    pod = place(controller, "n1", "web-0")
    before = controllers_flows(rig, bridge)
    rig.ovs.ofctl("del-flows", bridge, f"arp,arp_tpa={pod['ip']}")  # its ARP responder, its probe's admission
    gone = len(before) - len(controllers_flows(rig, bridge))
    assert gone >= 2, "the controller repaired before anyone looked"
    assert who_has(ext, pod["ip"]) == []  # nobody answers for it now

    token = controller.operator_token
    actual = controller.request("GET", "/v1/switches/1/flows?state=actual", token=token)["flows"]
    desired = controller.request("GET", "/v1/switches/1/flows?state=desired", token=token)["flows"]
    assert len(desired) - len(actual) == gone

    assert _wait_for(lambda: True if controllers_flows(rig, bridge) == before else None, timeout=10), \
        "the controller did not put the deleted flows back"
    assert [r.sha for r in who_has(ext, pod["ip"])] == [pod["mac"]]
    switches = controller.request("GET", "/v1/switches", token=token)["switches"]
    assert [s["in_sync"] for s in switches if s["dpid"] == 1] == [True]
