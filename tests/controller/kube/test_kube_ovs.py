"""The controller process with `store = "kubernetes"` against the rig's real Open vSwitch and the
session's real API server: node ports learned from frames, pods placed, then a SIGKILL restart that
finds everything again in the API (allocations, and the learned ports in the Node annotations) and
so sends no flow-mod and loses no ping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import IPPOOLS, Kube
from deploy.lab import netns
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.process import start_daemon, stop_pidfile, wait_until
from kubeenv import ensure_node
from test_controller_ovs import _dpid, _flow_table, _wait_for, place, who_has

pytestmark = pytest.mark.rig


@pytest.fixture
def api_in_mgmt(rig: Any, k8s: Any) -> Iterator[None]:
    """The API server's port inside the rig's management namespace, where the controller runs."""
    port = int(k8s.plane.server.rsplit(":", 1)[1])
    pidfile = rig.workdir / "k8s-forward.pid"
    start_daemon([sys.executable, "-m", "deploy.lab.tcpforward", "--netns", rig.mgmt_ns, "--port", str(port)],
                 pidfile=pidfile, logfile=rig.workdir / "k8s-forward.log")  # fmt: skip
    try:
        wait_until(lambda: _reachable(rig.mgmt_ns, port), timeout=10, what=f"port {port} inside {rig.mgmt_ns}")
        yield
    finally:
        stop_pidfile(pidfile)


def _reachable(namespace: str, port: int) -> bool:
    try:
        netns.connect_tcp(namespace, "127.0.0.1", port, timeout=1).close()
        return True
    except OSError:
        return False


def test_a_restart_on_the_kubernetes_store_sends_no_flow_mods(
    rig: Any, bridge: str, make_host: Any, k8s: Any, kube_clean: Kube, api_in_mgmt: None
) -> None:
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    n1, n2 = make_host("n1", cidr="198.18.0.11/24"), make_host("n2", cidr="198.18.0.12/24")
    ext = make_host("ext", cidr="198.18.0.2/24")
    for node in (n1, n2):
        ensure_node(kube_clean, node.name)
    kube_clean.create(IPPOOLS.path(), {"apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "lab"},
                                       "spec": {"subnet": "198.18.0.0/24", "ips": ["198.18.0.100-198.18.0.250"], "default": True}})  # fmt: skip
    controller = Controller(workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns,
                            nodes={n.name: NodeSpec(n.name) for n in (n1, n2)},  # unpinned: learned from frames
                            trusted={_dpid(rig, bridge): (ext.ofport,)}, pool=PoolSpec("198.19.255.0/24"),  # not used: IPPools are
                            kubeconfig=k8s.kubeconfig)  # fmt: skip
    controller.start(timeout=60)
    try:
        controller.wait_healthy(timeout=15, switches=1)
        for node in (n1, n2):
            controller.request("PUT", f"/v1/nodes/{node.name}", {"mac": node.mac, "ip": node.ip}, node=node.name)
            node.run("arping", "-c", "1", "-w", "2", "-I", "eth0", ext.ip, check=False)  # the node speaks
            assert _wait_for(lambda node=node: controller.request("PUT", f"/v1/nodes/{node.name}", {
                "mac": node.mac, "ip": node.ip}, node=node.name)["port"]) == node.ofport  # fmt: skip
        pods = [place(controller, node.name, f"web-{node.name}") for node in (n1, n2)]
        assert pods[0]["ip"] == "198.18.0.100"  # from the IPPool
        pod_host = rig.add_macvlan_pod("kube-restart-pod", n1, cidr=f"{pods[0]['ip']}/24", mac=pods[0]["mac"])
        assert ext.ping(pods[0]["ip"])
        flows_before = _flow_table(rig, bridge)

        ping = subprocess.Popen(netns.exec_argv(ext.netns, ["ping", "-n", "-q", "-i", "0.02", "-c", "200", pods[0]["ip"]]),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        controller.restart(kill=True)
        health = controller.wait_healthy(timeout=30, switches=1)
        output, _ = ping.communicate(timeout=30)
        netns.remove(pod_host.netns)

        assert " 0% packet loss" in output, output
        assert health["stats"]["flow_mods"] == 0  # the learned ports came back from the Node annotations
        assert _flow_table(rig, bridge) == flows_before
        for node, pod in zip((n1, n2), pods):
            listed = controller.request("GET", f"/v1/nodes/{node.name}/pods", node=node.name)["pods"]
            assert [(p["name"], p["ip"]) for p in listed] == [(f"web-{node.name}", pod["ip"])]
        assert [r.sha for r in who_has(ext, pods[1]["ip"])] == [pods[1]["mac"]]
    finally:
        controller.stop()

