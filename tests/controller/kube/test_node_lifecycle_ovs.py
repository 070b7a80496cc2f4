"""Node lifecycle on the real parts: the controller process with `store = "kubernetes"`, the session's
API server, the rig's Open vSwitch and live pod namespaces.

Three nodes with a pod each (and a StatefulSet pod on the first): the first's Node object is deleted,
the second reports NotReady for longer than `node_grace`, the third stays Ready. The first two are
forgotten: their pods' addresses released with the reason on their IPAllocations (the StatefulSet
pod's stays Reserved), their flows gone from the switch, the pods unreachable, and the third node
untouched. Neither may register while the cluster has lost it; the second comes back Ready,
registers and re-adds its live pod with the address and MAC it has, as its agent's sync does, and
the pod, never touched meanwhile, answers again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubeenv import ensure_node
from test_controller_ovs import _dpid, _flow_table, place
from test_kube_ovs import api_in_mgmt  # noqa: F401  (fixture)

from controller.kube.client import EVENTS, IPALLOCATIONS, IPPOOLS, NODES, Kube, Missing
from controller.kube.store import UPLINK_ANNOTATION
from deploy.lab.control import ApiError, Controller, NodeSpec, PoolSpec

pytestmark = pytest.mark.rig


def ready(kube: Kube, name: str, status: str, *, since: float) -> None:
    """Node `name`'s Ready condition, as its kubelet reports it (heartbeat now)."""
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.request("PATCH", NODES.path(name=name, sub="status"), content_type="application/strategic-merge-patch+json",
                 body={"status": {"conditions": [{"type": "Ready", "status": status, "reason": "Test", "message": "a test",
                                                   "lastHeartbeatTime": now, "lastTransitionTime": stamp}]}})  # fmt: skip


def until(probe: Callable[[], Any], *, timeout: float = 30.0, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(0.1)
    return value


def in_flows(rig: Any, bridge: str, ip: str) -> bool:
    """Whether any flow of the bridge matches on or sets `ip`."""
    return any(re.search(rf"={re.escape(ip)}\b", flow) for flow in _flow_table(rig, bridge))


def allocation(kube: Kube, ip: str) -> dict[str, Any]:
    return kube.get(IPALLOCATIONS.path(name=ip))


def test_nodes_the_cluster_lost_lose_their_pods_and_flows(
    rig: Any, bridge: str, make_host: Any, k8s: Any, kube_clean: Kube, api_in_mgmt: None
) -> None:
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    gone, sick, well = (make_host(name, cidr=f"198.18.0.{11 + i}/24") for i, name in enumerate(("gone", "sick", "well")))
    ext = make_host("ext", cidr="198.18.0.2/24")
    for node in (gone, sick, well):  # no capacity: the scheduler binds no other test's pods to them
        ensure_node(kube_clean, node.name)
    kube_clean.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "lab"},
                                       "spec": {"subnet": "198.18.0.0/24", "ips": ["198.18.0.100-198.18.0.250"], "default": True}})  # fmt: skip
    dpid = _dpid(rig, bridge)
    controller = Controller(workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns,
                            nodes={**{n.name: NodeSpec(n.name, dpid=dpid, port=n.ofport) for n in (gone, sick, well)},
                                   "stranger": NodeSpec("stranger")},  # in the config, not in the cluster
                            trusted={dpid: (ext.ofport,)}, pool=PoolSpec("198.19.255.0/24"), kubeconfig=k8s.kubeconfig)
    controller.write_config()  # [kubernetes] is its last table: the lifecycle's keys go there
    config = controller.config_path.read_text().replace("release_cooldown = 0\n", "release_cooldown = 300\n")
    controller.config_path.write_text(config + "node_grace = 60\nnode_interval = 0.3\n")
    controller.start(timeout=60)
    try:
        controller.wait_healthy(timeout=15, switches=1)
        with pytest.raises(ApiError) as unknown:
            controller.request("PUT", "/v1/nodes/stranger", {"mac": "02:00:00:00:01:99", "ip": "198.18.0.99"},
                               node="stranger")
        assert unknown.value.status == 404 and "no Node object of that name in the cluster" in str(unknown.value)
        for node in (gone, sick, well):
            controller.request("PUT", f"/v1/nodes/{node.name}", {"mac": node.mac, "ip": node.ip}, node=node.name)
        pods = {node.name: place(controller, node.name, f"web-{node.name}") for node in (gone, sick, well)}
        member = place(controller, "gone", "db-0", sticky="default/db/0@uid-db")
        hosts = {name: rig.add_macvlan_pod(f"life-{name}", node, cidr=f"{pods[name]['ip']}/24", mac=pods[name]["mac"])
                 for name, node in (("gone", gone), ("sick", sick), ("well", well))}
        for pod in pods.values():
            assert ext.ping(pod["ip"])
        lost_ips = (pods["gone"]["ip"], pods["sick"]["ip"], member["ip"])
        assert all(in_flows(rig, bridge, ip) for ip in lost_ips)

        kube_clean.delete(NODES.path(name="gone"))
        ready(kube_clean, "sick", "False", since=time.time() - 3600)
        placed = lambda: {p["ip"] for p in controller.request("GET", "/v1/placements", node="well")["placements"]}  # noqa: E731
        until(lambda: not {pods["gone"]["ip"], pods["sick"]["ip"], member["ip"]} & placed(), what="the lost nodes' pods released")
        assert {pods["well"]["ip"], well.ip} <= placed() and gone.ip not in placed() and sick.ip not in placed()
        assert not any(in_flows(rig, bridge, ip) for ip in lost_ips)
        assert in_flows(rig, bridge, pods["well"]["ip"])
        assert not ext.ping(pods["gone"]["ip"]) and not ext.ping(pods["sick"]["ip"])
        assert ext.ping(pods["well"]["ip"])
        released = allocation(kube_clean, pods["gone"]["ip"])["status"]
        assert (released["phase"], released["reason"]) == ("Cooldown", "node gone: its Node object was deleted")
        assert allocation(kube_clean, member["ip"])["status"]["phase"] == "Reserved"  # its successor's
        assert "NotReady for" in allocation(kube_clean, pods["sick"]["ip"])["status"]["reason"]
        events = until(lambda: [e for e in kube_clean.get(EVENTS.path(namespace="default"))["items"]
                                if e["involvedObject"]["name"] == "gone" and e["reason"] == "NodeForgotten"],
                       what="an Event about the forgotten node")
        assert events[0]["involvedObject"]["kind"] == "Node"
        assert "2 pod(s) released and their flows removed" in events[0]["message"]
        assert UPLINK_ANNOTATION not in (kube_clean.get(NODES.path(name="sick"))["metadata"].get("annotations") or {})

        with pytest.raises(ApiError) as lost:
            controller.request("PUT", "/v1/nodes/gone", {"mac": gone.mac, "ip": gone.ip}, node="gone")
        assert lost.value.status == 404 and "no Node object of that name in the cluster" in str(lost.value)
        with pytest.raises(ApiError) as sick_refused:
            controller.request("PUT", "/v1/nodes/sick", {"mac": sick.mac, "ip": sick.ip}, node="sick")
        assert sick_refused.value.status == 503 and "it registers once Ready again" in str(sick_refused.value)

        ready(kube_clean, "sick", "True", since=time.time())
        until(lambda: controller.raw_request("PUT", "/v1/nodes/sick", {"mac": sick.mac, "ip": sick.ip},
                                             token=controller.nodes["sick"].token)[0] == 200, what="sick registers again")
        back = place(controller, "sick", "web-sick", ip=pods["sick"]["ip"], mac=pods["sick"]["mac"])
        assert (back["ip"], back["mac"]) == (pods["sick"]["ip"], pods["sick"]["mac"])
        assert ext.ping(pods["sick"]["ip"])  # the pod's namespace and link were never touched
        assert hosts["sick"].ping(ext.ip)
    finally:
        controller.stop()
        for name in ("gone", "sick", "well"):
            try:
                kube_clean.delete(NODES.path(name=name))
            except Missing:
                pass
