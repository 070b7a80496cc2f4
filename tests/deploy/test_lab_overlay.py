"""deploy/lab/overlay as kustomize builds it (kubectl kustomize of the pinned release, no server): the
base's objects with the lab's differences only, and the controller's config still one the controller
loads. The overlay applied for real is tests/deploy/test_lab_incluster.py."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from controller import config
from deploy.k8s import build
from deploy.lab import incluster, pki
from deploy.lab.lab import SUBNET

BASE = incluster.OVERLAY.parents[1] / "kubernetes"


def built(directory: Any) -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = build.binary_path("kubectl")
    assert kubectl.exists(), f"{kubectl} missing: run `make k8s`"
    out = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o}


def test_overlay_keeps_every_object_of_the_base() -> None:
    assert built(incluster.OVERLAY).keys() == built(BASE).keys()


def test_workloads_run_on_real_nodes_and_the_controller_finds_the_api_in_its_node() -> None:
    objects = built(incluster.OVERLAY)
    for kind, name in (("Deployment", "underlay-controller"), ("DaemonSet", "underlay-agent")):
        terms = objects[kind, name]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [{"key": "underlay.io/kubelet", "operator": "In", "values": ["real"]}]}]
    container = objects["Deployment", "underlay-controller"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == str(incluster.API_PORT_IN_NODE)
    assert "POD_NAME" in env and "POD_IP" in env  # the base's env kept


def test_configs_are_the_labs_and_load(tmp_path: Path) -> None:
    objects = built(incluster.OVERLAY)
    agent = objects["ConfigMap", "underlay-agent"]["data"]
    assert (agent["master"], agent["service-cidr"]) == ("eth0", "192.0.2.0/24")
    assert tomllib.loads(agent["agent.toml"])["master"] == "eth0"
    text = objects["ConfigMap", "underlay-controller"]["data"]["controller.toml"]
    data = tomllib.loads(text)
    data["pools"] = {"default": {"subnet": SUBNET}}  # what the lab's IPPool holds, for the checks across keys
    tls = pki.server_files(tmp_path, ip="127.0.0.1")  # the Secret the Deployment mounts there
    data["api"].update(tls_cert=str(tls.cert), tls_key=str(tls.key))
    loaded = config.parse(data)
    assert loaded.switches[1].trusted_ports == (1,)
    assert {n: (c.dpid, c.port) for n, c in loaded.nodes.items()} == {"node1": (1, 2), "node2": (1, 3)}
