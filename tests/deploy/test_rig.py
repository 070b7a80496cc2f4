"""The rig itself: real OVS in NORMAL mode forwards between hosts, and macvlan works on a host uplink."""

from __future__ import annotations

import pytest
from deploy.lab import netns, transfer
from deploy.lab.rig import Rig, sweep_stale

pytestmark = pytest.mark.rig


def test_two_hosts_ping_through_normal_bridge(rig, bridge, make_host):
    h1 = make_host("h1", cidr="198.18.0.1/24")
    h2 = make_host("h2", cidr="198.18.0.2/24")
    assert not h1.ping(h2.ip, timeout=1), "fail_mode=secure with no flows must forward nothing"

    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")

    assert h1.ping(h2.ip, count=2)
    assert h2.ping(h1.ip)


def test_macvlan_child_in_third_namespace_reaches_other_host(rig, bridge, make_host):
    h1 = make_host("m1", cidr="198.18.1.1/24")
    h2 = make_host("m2", cidr="198.18.1.2/24")
    pod = rig.add_macvlan_pod("mpod", h1, cidr="198.18.1.10/24")
    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")

    assert pod.ping(h2.ip, count=2)
    assert h2.ping(pod.ip)
    netns.remove(pod.netns)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_tcp_and_udp_through_the_userspace_datapath(rig, bridge, make_host, proto):
    """Host to host and from a macvlan child of a host: every byte checked. The rig's cables have
    checksum offload off; with it on, both would time out (the receivers drop bad checksums)."""
    h1 = make_host("t1", cidr="198.18.3.1/24")
    h2 = make_host("t2", cidr="198.18.3.2/24")
    pod = rig.add_macvlan_pod("tpod", h1, cidr="198.18.3.10/24")
    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")
    try:
        for client, server in ((h1, h2), (h2, h1), (pod, h2), (h2, pod)):
            result = transfer.exchange(transfer.in_namespace(server.netns), transfer.in_namespace(client.netns),
                                       server.ip, proto=proto)
            assert result.ok, f"{client.name} -> {server.name}: {result}"
    finally:
        netns.remove(pod.netns)


def test_destroyed_rig_leaves_nothing(tmp_path):
    inner = Rig(state_root=tmp_path).start()
    br = inner.add_bridge()
    inner.add_host("a", br, cidr="198.18.2.1/24")
    assert netns.list_names(f"{inner.prefix}-") == [f"{inner.prefix}-a", f"{inner.prefix}-mgmt"]

    inner.stop()
    inner.stop()  # twice is fine

    assert netns.list_names(f"{inner.prefix}-") == []
    assert not (tmp_path / inner.prefix).exists()


def test_sweep_removes_rig_whose_owner_died(tmp_path):
    inner = Rig(state_root=tmp_path).start()
    (inner.workdir / "owner").write_text("999999999")  # no such process

    assert sweep_stale(tmp_path) == [inner.prefix]
    assert netns.list_names(f"{inner.prefix}-") == []


def test_missing_tool_is_named_in_one_line():
    from deploy.lab.rig import MissingPrerequisite, check_prerequisites

    with pytest.raises(MissingPrerequisite, match=r"^missing no-such-ovs-tool: run `make setup`"):
        check_prerequisites(tools=("ip", "no-such-ovs-tool"))
