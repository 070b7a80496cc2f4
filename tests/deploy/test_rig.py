"""The rig itself: real OVS in NORMAL mode forwards between hosts, and macvlan works on a host uplink."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from deploy.lab import netns
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
    pod_ns = f"{rig.prefix}-mpod"
    netns.create(pod_ns)
    try:
        with IPRoute(netns=h1.netns) as ipr:
            ipr.link("add", ifname="mv0", kind="macvlan", link=ipr.link_lookup(ifname=h1.ifname)[0],
                     macvlan_mode="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="mv0")[0], net_ns_fd=pod_ns)
        netns.configure(pod_ns, "mv0", cidr="198.18.1.10/24")
        with IPRoute(netns=pod_ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="mv0")[0], state="up")
        rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")

        assert netns.run(pod_ns, ["ping", "-n", "-c", "2", "-W", "2", h2.ip], check=False).returncode == 0
        assert h2.ping("198.18.1.10")
    finally:
        netns.remove(pod_ns)


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
