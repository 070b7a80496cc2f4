"""A host on a trusted port (a router, an external system: its frames pass unchecked) sends LLDP
frames that claim to come from a switch port. Were they carried across the fabric, they would reach
the controller from a link port and make that link look miscabled (taken out of use: a partition
on demand), or confirm a link that is really dead. They must never cross a switch: every fabric
switch drops LLDP from any port but its link ports, and the topology stays as it is.

Before, the forged frames were flooded along the tree like any multicast, punted at the next switch's
link port, and every link on their way was reported miscabled."""

from __future__ import annotations

import time

import pytest
from attacker import arrives, marker
from fabricrig import all_up, build, wait_for

from controller import lldp
from controller.topology import LinkEnd
from deploy.lab import frames
from deploy.lab.rig import Rig

pytestmark = pytest.mark.rig


def test_forged_lldp_from_a_trusted_host_crosses_no_switch_and_changes_no_link(rig: Rig) -> None:
    for fabric in build(rig, "sec-lldp", hosts=("b", "c")):
        hb, hc = fabric.hosts["b"], fabric.hosts["c"]
        wait_for(lambda: all_up(fabric), timeout=10, what="all three links confirmed by LLDP")
        mark = marker()
        for claimed in (LinkEnd(fabric.dpids["c"], 77), LinkEnd(fabric.dpids["a"], 101)):  # wrong, and "right"
            forged = lldp.build(claimed, name=mark.decode())
            assert not arrives(hb, forged, hc, mark=mark, repeat=5), "a forged LLDP frame crossed the fabric"
            for _ in range(20):
                frames.send(hb.netns, hb.ifname, forged)
                time.sleep(0.05)
            assert all_up(fabric), fabric.topology()["links"]
        assert "miscabled" not in fabric.controller.logfile.read_text()
