"""Pods on the segment, end to end: plugin binary → agent process → kernel and the real controller,
whose flows alone carry the segment's frames (fail_mode=secure, no NORMAL-everything flow)."""

from __future__ import annotations

import subprocess
import threading

import pytest
from pyroute2 import IPRoute

from deploy.lab import frames, transfer
from deploy.lab import netns as lab_netns
from underlay_testbed import links_in, ns_of, start_agent, stop_agent, wait_for

pytestmark = pytest.mark.rig
K8S = "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


def pod_ping(pod: str, address: str) -> bool:
    return lab_netns.run(ns_of(pod), ["ping", "-n", "-c", "2", "-W", "2", address], check=False).returncode == 0


def add(node, pod: str, cid: str, *, args: str = "", **conf: object) -> dict:
    call = node.cni("ADD", node.conf(**conf), container_id=cid, netns=pod, args=K8S.format(cid) + args)
    assert call.returncode == 0, call.stdout
    return call.json


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


def host_routes(node) -> set[str]:
    """The node's /32 routes through the host shim: one per local macvlan pod."""
    with IPRoute(netns=node.host.netns, flags=0) as ipr:
        shim = ipr.link_lookup(ifname="ulshim0")
        routes = ipr.get_routes(family=2, table=254, oif=shim[0]) if shim else []
        return {r.get_attr("RTA_DST") for r in routes if r["dst_len"] == 32}


def test_pods_on_two_nodes_reach_each_other_the_outside_and_their_node(make_node, pods, segment):
    n1, n2 = make_node("n1"), make_node("n2")
    p1, p2 = pods.make("a"), pods.make("b")
    ip1, ip2 = ip_of(add(n1, p1, "a")), ip_of(add(n2, p2, "b"))

    assert pod_ping(p1, ip2) and pod_ping(p2, ip1)
    assert segment.external.ping(ip1) and segment.external.ping(ip2)
    assert n1.host.ping(ip1), "a macvlan pod must be reachable from its own node (host shim)"
    assert n2.host.ping(ip2)
    assert pod_ping(p1, n1.host.ip)
    assert pod_ping(p1, n2.host.ip), "a pod reaches another node"
    assert lab_netns.run(ns_of(p1), ["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"]).stdout.strip() == "1"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_tcp_and_udp_between_pods_on_two_nodes_and_from_outside(make_node, pods, segment, proto):
    """Through the controller's flows only (no NORMAL-everything): a few MB of TCP (or 64 UDP
    echoes) each way, every byte checked, pod to pod across nodes and external host to pod."""
    n1, n2 = make_node("n1"), make_node("n2")
    p1, p2 = pods.make("a"), pods.make("b")
    ip1, ip2 = ip_of(add(n1, p1, "a")), ip_of(add(n2, p2, "b"))
    ext = segment.external

    for client, server, address in ((ns_of(p1), ns_of(p2), ip2), (ns_of(p2), ns_of(p1), ip1),
                                    (ext.netns, ns_of(p1), ip1), (ns_of(p2), ext.netns, ext.ip)):
        result = transfer.exchange(transfer.in_namespace(server), transfer.in_namespace(client), address, proto=proto)
        assert result.ok, f"{client} -> {server}: {result}"


def test_outside_host_gets_arp_reply_from_the_switch(make_node, pods, segment):
    """An outside host ARPs for a pod IP: the switch's responder flow answers, the pod never sees it."""
    node, pod = make_node("n1"), pods.make("p")
    result = add(node, pod, "c1")
    ext = segment.external
    before = segment.health()["stats"]["packet_ins"]
    at_pod: list[frames.Arp] = []
    listener = threading.Thread(target=lambda: at_pod.extend(frames.listen(ns_of(pod), "eth0", timeout=1.5)))
    listener.start()

    request = frames.Arp(op=1, sha=ext.mac, spa=ext.ip, tha="00:00:00:00:00:00", tpa=ip_of(result),
                         eth_src=ext.mac, eth_dst=frames.BROADCAST)
    replies = frames.arp_exchange(ext.netns, ext.ifname, request, timeout=1.0)
    listener.join()

    assert [r.sha for r in replies] == [result["interfaces"][0]["mac"]]
    assert [a for a in at_pod if a.tpa == ip_of(result)] == [], "the request must not reach the pod"
    assert segment.health()["stats"]["packet_ins"] == before, "answered by the datapath, not the controller"


def test_del_twice_and_after_the_netns_is_gone(make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("p")
    ip = ip_of(add(node, pod, "c1"))
    assert ip in host_routes(node)

    for _ in range(2):
        assert node.cni("DEL", node.conf(), container_id="c1", netns=pod).returncode == 0
    assert "eth0" not in links_in(ns_of(pod))
    assert ip not in host_routes(node)
    assert segment.allocations("n1") == {}

    add(node, pod, "c2")
    lab_netns.remove(ns_of(pod))
    gone = node.cni("DEL", node.conf(), container_id="c2", netns=pod)
    assert gone.returncode == 0, gone.stdout
    assert segment.allocations("n1") == {}
    assert node.cni("DEL", node.conf(), container_id="never-added", netns="").returncode == 0


HELD = "198.18.5.150"
FAILURES = {
    "controller refuses (409)": (101, f"controller: pod default/c1: {HELD} is held by default/holder"),
    "switch disconnected (503)": (11, "pod default/c1: controller: switch"),
    "controller down": (11, "pod default/c1: controller https://127.0.0.1:6680 unreachable: [Errno 111]"),
    "host shim gone": (100, "pod default/c1: host shim ulshim0 is missing from netns"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_add_failing_half_way_leaves_nothing(failure, make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("p")
    conf, args = node.conf(), ""
    if failure.startswith("controller refuses"):
        add(node, pods.make("holder"), "holder", args=f";IP={HELD}")
        args = f";IP={HELD}"
    elif failure.startswith("switch"):
        segment.disconnect_switch()
    elif failure == "controller down":
        segment.controller.stop()
    else:  # the last kernel step fails: the link made and the allocation held must both go
        add(node, pods.make("holder"), "holder")  # the node's first pod makes the shim (its kind follows the pods')
        lab_netns.run(node.host.netns, ["ip", "link", "del", "ulshim0"])

    call = node.cni("ADD", conf, container_id="c1", netns=pod, args=K8S.format("c1") + args)

    code, message = FAILURES[failure]
    assert (call.returncode, call.json["code"]) == (1, code), call.stdout
    assert call.json["msg"].startswith(message), call.json["msg"]
    assert links_in(ns_of(pod)) == ["lo"]
    if failure == "controller down":
        segment.controller.start()
    assert ("c1", "eth0") not in segment.allocations("n1")
    assert host_routes(node) <= {HELD}
    assert [p.name for p in (node.socket.parent / "n1-state").glob("*.json")] in ([], ["holder_eth0.json"])


def test_requested_ip_and_mac_through_runtime_config(make_node, pods, segment):
    node = make_node("n1")
    pod = pods.make("p")
    result = add(node, pod, "c1", runtimeConfig={"ips": ["198.18.5.150/24"], "mac": "0a:00:00:00:01:50"})

    assert result["ips"][0]["address"] == "198.18.5.150/24"
    assert result["interfaces"][0]["mac"] == "0a:00:00:00:01:50"
    assert segment.external.ping("198.18.5.150")


def test_the_pod_uid_reaches_the_controller(make_node, pods, segment):
    node = make_node("n1")
    add(node, pods.make("p"), "c1", args=";K8S_POD_UID=5f0c7a4e-0000-4000-8000-0000000000c1")
    add(node, pods.make("q"), "c2")
    uids = {key[0]: pod["uid"] for key, pod in segment.allocations("n1").items()}
    assert uids == {"c1": "5f0c7a4e-0000-4000-8000-0000000000c1", "c2": None}


def test_agent_restart_rebuilds_its_view_from_the_kernel(make_node, pods, segment, rig):
    node = make_node("n1")
    kept, lost = pods.make("kept"), pods.make("lost")
    ip_kept = ip_of(add(node, kept, "kept"))
    add(node, lost, "lost")
    stop_agent(node.process)
    lab_netns.remove(ns_of(lost))

    again = start_agent(rig, node.argv, host=node.host, socket=node.socket, log=node.log, bin_dir=node.bin_dir)
    try:
        assert host_routes(again) == {ip_kept}, "the route to the pod whose netns is gone must be removed"
        segment.wait_synced("n1", {("kept", "eth0")})  # the start-up sync releases the lost pod
        assert again.cni("DEL", again.conf(), container_id="kept", netns=kept).returncode == 0
    finally:
        stop_agent(again.process)


@pytest.mark.parametrize("store", ["kept", "lost"])
def test_controller_restart_triggers_reregistration_and_resync(store, make_node, pods, segment):
    """SIGKILL, new epoch: the agent registers again and re-reports; a controller that lost its
    store gets the pod back with the same address and MAC, and the pod is reachable again."""
    node = make_node("n1", resync_interval="0.2")
    pod = pods.make("p")
    result = add(node, pod, "c1")
    old_epoch = segment.health()["epoch"]

    segment.controller.stop(kill=True)
    if store == "lost":
        for path in segment.controller.workdir.glob("store.sqlite*"):
            path.unlink()
    segment.controller.start()
    segment.controller.wait_healthy(timeout=15, switches=1)
    epoch = segment.health()["epoch"]

    assert epoch != old_epoch
    wait_for(lambda: any("event=registered node=n1" in line and line.endswith(f"epoch={epoch}")
                         for line in node.log.read_text().splitlines()), what="the agent to register at the new epoch")
    segment.wait_synced("n1", {("c1", "eth0")})
    placed = segment.allocations("n1")[("c1", "eth0")]
    assert (placed["ip"], placed["mac"]) == (ip_of(result), result["interfaces"][0]["mac"])
    assert segment.external.ping(ip_of(result))


# Services: what kube-proxy installs on a node, in iptables mode, for one ClusterIP with one backend
# (KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP, masquerading what comes from outside its clusterCIDR),
# written by hand into the node's namespace. The ClusterIP range is the conflist's serviceCIDR.
SERVICE_CIDR = "198.19.96.0/24"
CLUSTER_IP = "198.19.96.10"
CLUSTER_CIDR = "198.19.128.0/17"  # kube-proxy's pod range: not the underlay pools, so it masquerades them
NODE_EXTRA_ADDRESS = "198.19.97.1"  # an address of the node on another link than the uplink


def kube_proxy_service(node, *, cluster_ip: str, backend: str, port: int = transfer.PORT) -> None:
    rules = [
        "*nat",
        ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-TEST - [0:0]", ":KUBE-SEP-TEST - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]",
        "-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES", "-A POSTROUTING -j KUBE-POSTROUTING",
        f"-A KUBE-SERVICES -d {cluster_ip}/32 -p tcp --dport {port} -j KUBE-SVC-TEST",
        f"-A KUBE-SVC-TEST ! -s {CLUSTER_CIDR} -d {cluster_ip}/32 -p tcp --dport {port} -j KUBE-MARK-MASQ",
        "-A KUBE-SVC-TEST -j KUBE-SEP-TEST",
        f"-A KUBE-SEP-TEST -p tcp -j DNAT --to-destination {backend}:{port}",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE",
        "COMMIT",
    ]
    subprocess.run(lab_netns.exec_argv(node.host.netns, ["iptables-restore", "--noflush"]), input="\n".join(rules) + "\n",
                   text=True, check=True, capture_output=True)
    lab_netns.run(node.host.netns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])  # a Kubernetes node forwards


@pytest.mark.parametrize("where", ["other node", "same node"])
def test_a_pod_reaches_a_cluster_ip_through_its_nodes_kube_proxy_rules(make_node, pods, segment, where):
    """A pod's packets to a ClusterIP go to its node through the host shim (serviceCIDR), meet the
    node's DNAT and masquerade there, reach the backend pod, and the answers come back through the node."""
    n1, n2 = make_node("n1"), make_node("n2")
    client, backend = pods.make("client"), pods.make("backend")
    client_ip = ip_of(add(n1, client, "client", serviceCIDR=[SERVICE_CIDR]))
    backend_ip = ip_of(add(n2 if where == "other node" else n1, backend, "backend"))
    kube_proxy_service(n1, cluster_ip=CLUSTER_IP, backend=backend_ip)

    result = transfer.exchange(transfer.in_namespace(ns_of(backend)), transfer.in_namespace(ns_of(client)), CLUSTER_IP)
    assert result.ok, f"{client_ip} -> {CLUSTER_IP} -> {backend_ip}: {result}"


def test_without_service_cidr_the_cluster_ip_is_not_reached(make_node, pods, segment):
    """The same rules, a pod whose network has no serviceCIDR: its packets never reach the node."""
    n1, n2 = make_node("n1"), make_node("n2")
    client, backend = pods.make("client"), pods.make("backend")
    add(n1, client, "client")
    kube_proxy_service(n1, cluster_ip=CLUSTER_IP, backend=ip_of(add(n2, backend, "backend")))

    result = transfer.exchange(transfer.in_namespace(ns_of(backend)), transfer.in_namespace(ns_of(client)), CLUSTER_IP,
                               timeout=3)
    assert not result.ok


def test_a_pod_reaches_every_address_of_its_node_and_the_node_probes_it(make_node, pods, segment):
    """Kubelet probes a pod from its node, and a pod talks to its node's addresses (hostNetwork
    pods, the API server's endpoint): through the shim, whichever link of the node holds the address."""
    n1 = make_node("n1")
    lab_netns.run(n1.host.netns, ["ip", "address", "add", f"{NODE_EXTRA_ADDRESS}/32", "dev", "lo"])
    pod = pods.make("a")
    ip = ip_of(add(n1, pod, "a"))

    assert pod_ping(pod, NODE_EXTRA_ADDRESS) and pod_ping(pod, n1.host.ip)
    probe = transfer.exchange(transfer.in_namespace(ns_of(pod)), transfer.in_namespace(n1.host.netns), ip)
    assert probe.ok, f"{n1.name} -> {ip}: {probe}"
