"""Flows deleted on the switch behind the controller's back: an operator's read of what the switch
holds with `repair=true` (GET /v1/switches/<dpid>/flows?state=actual&repair=true, what `underlayctl
trace` does) finds the difference and the controller repairs it at once; a read without it changes
nothing. With the real controller and the rig's Open vSwitch."""

from __future__ import annotations

import pytest
from test_controller_ovs import _dpid, _flow_table, _segment, _wait_for, place, who_has

from openflow.tables import SEEN, table_id

pytestmark = pytest.mark.rig


@pytest.fixture
def segment(rig, bridge, make_host):
    """test_controller_ovs's segment without the drift audit (audit_interval 0): only a read with
    repair=true repairs the switch here, so what a plain read leaves is deterministic."""
    yield from _segment(rig, bridge, make_host, pinned=True, audit_interval=0)


def controllers_flows(rig, bridge: str) -> list[str]:
    """The bridge's flows but the `seen` records the switch learns by itself."""
    return [line for line in _flow_table(rig, bridge) if f"table={table_id(SEEN)}," not in line]


def test_a_read_with_repair_that_finds_deleted_flows_makes_the_controller_repair_them(rig, bridge, segment):
    controller, _, _, ext = segment
    dpid = _dpid(rig, bridge)
    pod = place(controller, "n1", "web-0")
    before = controllers_flows(rig, bridge)
    rig.ovs.ofctl("del-flows", bridge, f"arp,arp_tpa={pod['ip']}")  # its ARP responder, its probe's admission
    gone = len(before) - len(controllers_flows(rig, bridge))
    assert gone >= 2, "the controller repaired before anyone looked"
    assert who_has(ext, pod["ip"]) == []  # nobody answers for it now

    token = controller.operator_token
    looked = controller.request("GET", f"/v1/switches/{dpid}/flows?state=diff", token=token)
    assert (looked["in_sync"], len(looked["to_add"])) == (False, gone)
    assert len(controllers_flows(rig, bridge)) == len(before) - gone  # a plain read repairs nothing
    actual = controller.request("GET", f"/v1/switches/{dpid}/flows?state=actual&repair=true", token=token)["flows"]
    desired = controller.request("GET", f"/v1/switches/{dpid}/flows?state=desired", token=token)["flows"]
    assert len(desired) - len(actual) == gone  # the answer: the switch as it was read

    assert _wait_for(lambda: True if controllers_flows(rig, bridge) == before else None, timeout=10), \
        "the controller did not put the deleted flows back"
    assert [r.sha for r in who_has(ext, pod["ip"])] == [pod["mac"]]
    switches = controller.request("GET", "/v1/switches", token=token)["switches"]
    assert [s["in_sync"] for s in switches if s["dpid"] == dpid] == [True]


def test_repair_is_true_or_false_and_only_for_what_the_switch_holds(rig, bridge, segment):
    controller, dpid = segment[0], _dpid(rig, bridge)
    for query, reason in (("state=desired&repair=true", "repair: only with state=actual or state=diff (what the switch holds)"),
                          ("state=actual&repair=yes", "repair: 'yes' is not true or false")):
        status, body = controller.raw_request("GET", f"/v1/switches/{dpid}/flows?{query}", token=controller.operator_token)
        assert (status, body["error"]) == (400, reason)
