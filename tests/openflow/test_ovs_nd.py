"""Neighbor Discovery answered by the real switch alone, proved by a real kernel.

A running controller keeps its flows on the rig's switch; the pods' IPv6 placements are installed
beside them (`ofpeer.install_placements`: the controller's pools are IPv4 only here). Then the pod's
link goes down and the controller is frozen (SIGSTOP): the external host's kernel still resolves the
pod's IPv6 address to the right MAC, so the advertisement it got came from the switch's flows, with
a checksum and fields the kernel accepts, and the switch sent nothing to the controller.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ofpeer import install_placements

from deploy.lab.rig import Host, Rig
from openflow.model import Placement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node_agent"))
from underlay_testbed import Segment, run_segment  # noqa: E402

pytestmark = pytest.mark.rig

EXT_IP6 = "fd00:5::c8"


@pytest.fixture
def segment(rig, bridge, make_host) -> Iterator[Segment]:
    yield from run_segment(rig, bridge, make_host, pinned=True)


def neighbour(host: Host, ip: str) -> str:
    return host.run("ip", "-6", "neigh", "show", ip, "dev", host.ifname).stdout.strip()


def switch_packet_ins(rig: Rig, bridge: str) -> int:
    """Every packet the switch sent to a controller: the counters of the flows that output to
    CONTROLLER (in OpenFlow 1.3 nothing else does: a table miss drops)."""
    rig.ovs.appctl("revalidator/wait")
    dump = rig.ovs.ofctl("dump-flows", bridge)
    return sum(int(m.group(1)) for line in dump.splitlines() if "CONTROLLER" in line
               for m in [re.search(r"n_packets=(\d+)", line)] if m)


def answered(rig: Rig, bridge: str, ip: str) -> int:
    """n_packets of the flow that turns solicitations for `ip` into advertisements."""
    rig.ovs.appctl("revalidator/wait")
    dump = rig.ovs.ofctl("dump-flows", bridge, f"icmp6,icmp_type=135,icmp_code=0,nd_target={ip}")
    (count,) = [int(re.search(r"n_packets=(\d+)", line).group(1))  # type: ignore[union-attr]
                for line in dump.splitlines() if "goto_table:4" in line]
    return count


@contextmanager
def frozen(pidfile: Path) -> Iterator[None]:
    """The process of `pidfile` stopped (SIGSTOP) for the block, continued after."""
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_the_external_hosts_kernel_learns_pod_macs_from_the_switch_alone(rig, bridge, segment) -> None:
    ext, n1 = segment.external, segment.hosts["n1"]
    controller = segment.controller
    for node in segment.hosts.values():
        controller.request("PUT", f"/v1/nodes/{node.name}", {"mac": node.mac, "ip": node.ip}, node=node.name)
    body = {"container_id": "c-web", "ifname": "eth0", "namespace": "default", "name": "web", "mode": "macvlan"}
    four = controller.request("POST", "/v1/nodes/n1/pods", body, node="n1")  # its IPv4 side, by the controller
    pod = rig.add_macvlan_pod("nd-web", n1, cidr=f"{four['ip']}/24", mac=four["mac"])
    macvlan = Placement("fd00:5::64", four["mac"], n1.ofport, "default/web")
    ipvlan = Placement("fd00:5::65", n1.mac, n1.ofport, "default/ipv")  # answers at its node's MAC
    install_placements(rig, bridge, (macvlan, ipvlan))
    ext.enable_ipv6(f"{EXT_IP6}/64")
    pod.run("ip", "link", "set", pod.ifname, "down")  # nobody there to answer but the switch
    ins_before, pins_before = controller.health()["stats"]["packet_ins"], switch_packet_ins(rig, bridge)

    with frozen(controller.pidfile):
        for placement in (macvlan, ipvlan):
            ext.run("ping", "-6", "-n", "-c", "1", "-W", "1", placement.ip, check=False)
            entry = neighbour(ext, placement.ip)
            assert f"lladdr {placement.mac} " in entry and "REACHABLE" in entry, entry
            assert answered(rig, bridge, placement.ip) >= 1
        assert switch_packet_ins(rig, bridge) == pins_before

    assert controller.health()["stats"]["packet_ins"] == ins_before
    counters = ext.run("nstat", "-az", "Icmp6InCsumErrors", "Icmp6InNeighborAdvertisements").stdout
    assert re.search(r"Icmp6InCsumErrors\s+0\b", counters), counters
    assert not re.search(r"Icmp6InNeighborAdvertisements\s+0\b", counters), counters


def test_an_unplaced_address_is_not_answered(rig, bridge, segment) -> None:
    """The control: without a placement nothing answers, the kernel's entry fails."""
    ext = segment.external
    ext.enable_ipv6(f"{EXT_IP6}/64")
    ext.run("ping", "-6", "-n", "-c", "1", "-W", "1", "fd00:5::99", check=False)
    assert "lladdr" not in neighbour(ext, "fd00:5::99")
