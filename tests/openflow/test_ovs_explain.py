"""Real Open vSwitch: the rig names the pipeline's tables, and a real dump, printed with numbers or
with names, explains back into every flow we pushed with its purpose and owner."""

from __future__ import annotations

import pytest
from ofpeer import connected
from ofstates import COOKIE, LEARN, PORT_ROUTER, dual_stack_state

from openflow import cookies
from openflow.diff import diff
from openflow.explain import explain, explain_flow, owner_map
from openflow.pipeline import desired_flows
from openflow.tables import TABLES

pytestmark = pytest.mark.rig


def test_a_dump_in_either_form_explains_every_flow(rig, bridge) -> None:
    state = dual_stack_state()
    desired = desired_flows(state)
    with connected(rig, bridge) as switch:
        switch.flow_mods(diff((), desired)[1])
    numbers = rig.ovs.ofctl("dump-flows", bridge)
    names = rig.ovs.ofctl("--names", "dump-flows", bridge)
    assert "table=ingress" in names and "table=0" in numbers  # the rig's Flow_Table rows

    owners = owner_map(state.placements, ports={PORT_ROUTER: "uplink"},
                       names=[(cookies.mac_owner(LEARN), "node/n3")])
    explained = explain(numbers, owners=owners, tag=COOKIE)
    assert sorted(explained, key=repr) == sorted(explain(names, owners=owners, tag=COOKIE), key=repr)
    assert sorted((e.table, e.priority, e.cookie) for e in explained) == \
        sorted((f.table, f.priority, f.cookie) for f in desired)
    assert all(e.ours and e.table in TABLES for e in explained)
    assert not [e for e in explained if e.owner.startswith("0x")], "an owner the map does not name"
    answers = {e.describe() for e in explained if e.table == "responder" and "arp_tpa=198.18.0.11" in e.match}
    assert answers == {"arp_responder for default/mac-1", "owner_pass for default/mac-1"}
    assert {e.describe() for e in explained if f"in_port={PORT_ROUTER}" in e.match} == {"trusted for uplink"}
    assert {e.describe() for e in explained if "dl_src=02:00:c6:12:00:03" in e.match} == {"learn for node/n3"}
    assert {e.describe() for e in explained if e.priority == 0} == {"pipeline"}
    # the controller's own view of the same flows says the same (its match and actions in its own words)
    assert sorted((e.table, e.priority, e.describe()) for e in explained) == \
        sorted((e.table, e.priority, e.describe()) for e in (explain_flow(f, owners=owners) for f in desired))
