"""node_agent.rtnl against the real kernel, in rig namespaces; pyroute2 reads back what it did."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from deploy.lab import netns
from node_agent.netlink import entered, netns_path
from node_agent.rtnl import RT_SCOPE_LINK, Rtnl, RtnlError, RtnlPool, attr, attrs, nested

pytestmark = pytest.mark.rig
BRIDGE_MODE = 4


def rtnl_in(ns: str) -> Rtnl:
    with entered(netns_path(ns)):
        return Rtnl.open()


@pytest.fixture
def node(make_host) -> Iterator[tuple[str, Rtnl]]:  # noqa: ANN001
    host = make_host("rtn", cidr="198.18.8.10/24")
    with rtnl_in(host.netns) as nl:
        yield host.netns, nl


@pytest.fixture
def pod(rig) -> Iterator[tuple[str, Rtnl]]:  # noqa: ANN001
    name = f"{rig.prefix}-rtpod"
    netns.create(name)
    try:
        with rtnl_in(name) as nl:
            yield name, nl
    finally:
        netns.remove(name)


def test_attributes_round_trip() -> None:
    packed = attr(3, b"eth0\0") + nested(18, attr(1, b"macvlan\0"))
    found = attrs(packed)
    assert found[3] == b"eth0\0"
    assert attrs(found[18]) == {1: b"macvlan\0"}


def test_reads_a_link_and_its_addresses(node) -> None:  # noqa: ANN001
    ns, nl = node
    link = nl.link("eth0")
    with IPRoute(netns=ns) as ipr:
        theirs = ipr.link("get", ifname="eth0")[0]
    assert link is not None
    assert (link.index, link.mtu, link.mac, link.up, link.kind) == (
        theirs["index"], theirs.get("IFLA_MTU"), theirs.get("IFLA_ADDRESS"), True, "veth")
    assert nl.ipv4_addresses(link.index) == ["198.18.8.10"]
    assert nl.link("nosuch0") is None
    assert nl.default_route_oif() is None


def test_makes_a_pod_link_in_another_namespace(node, pod) -> None:  # noqa: ANN001
    (node_ns, nl), (pod_ns, pod_nl) = node, pod
    fd = os.open(netns_path(pod_ns), os.O_RDONLY)
    try:
        nl.add_child(kind="macvlan", mode=BRIDGE_MODE, parent=nl.index("eth0") or 0, name="ultmp0", mtu=1400,
                     netns_fd=fd)
    finally:
        os.close(fd)
    assert nl.link("ultmp0") is None
    index = pod_nl.index("ultmp0")
    assert index is not None
    pod_nl.set_link(index, name="eth0", mac="02:00:00:00:08:05")
    pod_nl.add_address(index, "198.18.8.5", 24)
    pod_nl.set_link(index, up=True)
    pod_nl.route("0.0.0.0/0", oif=index, gateway="198.18.8.1")
    pod_nl.route("198.18.9.0/24", oif=index, scope=RT_SCOPE_LINK)
    pod_nl.route("198.18.9.0/24", oif=index, scope=RT_SCOPE_LINK)  # replace: twice is fine
    pod_nl.neighbour("198.18.8.10", index=index, mac="02:00:00:00:08:0a")

    with IPRoute(netns=pod_ns) as ipr:
        link = ipr.link("get", index=index)[0]
        assert (link.get("IFLA_IFNAME"), link.get("IFLA_ADDRESS"), link.get("IFLA_MTU")) == (
            "eth0", "02:00:00:00:08:05", 1400)
        assert link.get("IFLA_LINKINFO").get("IFLA_INFO_KIND") == "macvlan"
        assert [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)] == [("198.18.8.5", 24)]
        routes = {(r.get("RTA_DST"), r["dst_len"], r.get("RTA_GATEWAY"), r["scope"])
                  for r in ipr.get_routes(family=socket.AF_INET, table=254)}
        assert {(None, 0, "198.18.8.1", 0), ("198.18.9.0", 24, None, RT_SCOPE_LINK)} <= routes
        neighbours = {(n.get("NDA_DST"), n.get("NDA_LLADDR"), n["state"]) for n in ipr.get_neighbours(ifindex=index)}
        assert ("198.18.8.10", "02:00:00:00:08:0a", 0x80) in neighbours
    assert pod_nl.default_route_oif() == index
    assert pod_nl.link("eth0").up  # type: ignore[union-attr]

    pod_nl.route("198.18.9.0/24", oif=index, scope=RT_SCOPE_LINK, delete=True)
    pod_nl.neighbour("198.18.8.10", index=index)
    pod_nl.delete_link(index)
    assert pod_nl.link("eth0") is None


def test_ipv6_addresses_routes_and_neighbours(pod) -> None:  # noqa: ANN001
    """IPv6 through the same calls: a nodad address is usable at once (not tentative), the default
    route goes via the pool's IPv6 gateway, a /128 takes a preferred source, a permanent neighbour."""
    pod_ns, nl = pod
    with IPRoute(netns=pod_ns) as ipr:
        ipr.link("add", ifname="d6", kind="veth", peer="d6p")  # this kernel has no dummy
    netns.set_sysctl(pod_ns, "net.ipv6.conf.d6.disable_ipv6", "0")  # the rig's namespaces start without IPv6
    index = nl.index("d6")
    assert index is not None
    nl.set_link(index, up=True)
    nl.add_address(index, "fd00:18::5", 64, nodad=True)
    nl.add_address(index, "fe80::5", 64, nodad=True)
    nl.route("::/0", oif=index, gateway="fd00:18::1")
    nl.route("fd00:19::7/128", oif=index, prefsrc="fd00:18::5")
    nl.neighbour("fd00:18::10", index=index, mac="02:00:00:00:08:0a")

    assert nl.addresses(index, socket.AF_INET6) == ["fd00:18::5"]  # global only: no link-local
    with IPRoute(netns=pod_ns) as ipr:
        addrs = {(a.get("IFA_ADDRESS"), a["prefixlen"], a.get("IFA_FLAGS")) for a in ipr.get_addr(index=index)}
        assert {a[:2] for a in addrs} == {("fd00:18::5", 64), ("fe80::5", 64)}
        assert all(flags & 0x02 and not flags & 0x40 for _, _, flags in addrs), "nodad, not tentative"
        routes = {(r.get("RTA_DST"), r["dst_len"], r.get("RTA_GATEWAY"), r.get("RTA_PREFSRC"))
                  for r in ipr.get_routes(family=socket.AF_INET6, table=254, oif=index)}
        assert {(None, 0, "fd00:18::1", None), ("fd00:19::7", 128, None, "fd00:18::5")} <= routes
        neighbours = {(n.get("NDA_DST"), n.get("NDA_LLADDR"), n["state"]) for n in ipr.get_neighbours(ifindex=index)}
        assert ("fd00:18::10", "02:00:00:00:08:0a", 0x80) in neighbours

    nl.route("fd00:19::7/128", oif=index, delete=True)
    nl.neighbour("fd00:18::10", index=index)
    with IPRoute(netns=pod_ns) as ipr:
        assert not [r for r in ipr.get_routes(family=socket.AF_INET6, table=254, oif=index) if r["dst_len"] == 128
                    and r.get("RTA_DST") == "fd00:19::7"]
        assert "fd00:18::10" not in {n.get("NDA_DST") for n in ipr.get_neighbours(ifindex=index)}
    with pytest.raises(RtnlError) as twice:
        nl.add_address(index, "fd00:18::5", 64, nodad=True)
    assert twice.value.errno == errno.EEXIST and "add fd00:18::5/64" in str(twice.value)


def test_refusals_carry_the_errno_and_name_the_request(node) -> None:  # noqa: ANN001
    _, nl = node
    parent = nl.index("eth0") or 0
    with pytest.raises(RtnlError) as taken:
        nl.add_child(kind="macvlan", mode=BRIDGE_MODE, parent=parent, name="eth0")
    assert taken.value.errno == errno.EEXIST and "create macvlan eth0" in str(taken.value)
    with pytest.raises(RtnlError) as no_parent:
        nl.add_child(kind="macvlan", mode=BRIDGE_MODE, parent=99999, name="ulx0")
    assert no_parent.value.errno == errno.ENODEV
    with pytest.raises(RtnlError) as no_link:
        nl.delete_link(99999)
    assert no_link.value.errno == errno.ENODEV
    try:
        nl.add_child(kind="ipvlan", mode=0, parent=parent, name="ulipv0")
    except RtnlError as refused:  # a kernel without CONFIG_IPVLAN, like this one (see tests/uml)
        assert refused.errno == errno.EOPNOTSUPP
    else:
        assert nl.link("ulipv0").kind == "ipvlan"  # type: ignore[union-attr]
    assert nl.index("eth0") == parent  # the socket is still in step after refusals


def test_pool_keeps_sockets_warm_and_usable_after_a_refusal(node) -> None:  # noqa: ANN001
    ns, _ = node
    opened = []

    def opener() -> Rtnl:
        opened.append(rtnl_in(ns))
        return opened[-1]

    pool = RtnlPool(opener)
    with pytest.raises(RtnlError), pool.socket() as nl:
        nl.delete_link(99999)
    with pool.socket() as nl:
        assert nl.index("eth0") is not None
        with pool.socket() as other:  # a concurrent request gets its own
            assert other is not nl
    assert len(opened) == 2
    pool.close()
