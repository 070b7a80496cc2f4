"""README's "Running in a cluster", steps 3 and 4, run by the shell as they are written there, on the
session's control plane: the namespace, make-certs.sh, the TLS Secret and the CA ConfigMap, `kubectl
apply -k deploy/kubernetes/` and a pool. No kubelet runs here, so no container starts; what the API
server, the scheduler and the DaemonSet and Deployment controllers do with the objects is real:
an agent pod is placed on every node, and the controller's two replicas (host network: their ports
are their node's) on two different nodes."""

from __future__ import annotations

import os
import secrets
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from deploy.k8s import manifests

NAMESPACE = "underlay-system"
PLACEMENT_TIMEOUT = 60.0
README = manifests.MANIFEST_DIR.parents[1] / "README.md"
WORKLOADS = ("controller-config.yaml", "controller.yaml", "services.yaml", "agent-config.yaml", "agent.yaml")


def wait_for(probe: Callable[[], Any], *, what: str, timeout: float = PLACEMENT_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)
    return found


def readme_steps(*numbers: int) -> list[str]:
    """The shell blocks of README.md's "Running in a cluster" steps `numbers`, as a user copies them."""
    text = README.read_text()
    section = text[text.index("## Running in a cluster"):]
    section = section[:section.index("\n## ", 1)]
    blocks = []
    for number in numbers:
        step = section[section.index(f"\n{number}. "):]
        block = step[step.index("```sh\n") + len("```sh\n"):step.index("```\n", step.index("```sh"))]
        blocks.append(textwrap.dedent(block))
    return blocks


@pytest.fixture(scope="module")
def installed(k8s, tmp_path_factory) -> Iterator[list[str]]:
    """README's steps 3 and 4 run by the shell as written, with kubectl of the pinned release on PATH
    and KUBECONFIG the session's, from a directory where `deploy/` is this checkout's; then two new
    Ready nodes of this test, whose names this is. Afterwards the workloads, the pool, the Secret, the
    ConfigMap and the nodes go (the namespace, CRDs and RBAC stay: the session's other tests use them)."""
    try:
        kubectl = manifests.kubectl_path()
    except manifests.MissingKubectl as missing:
        pytest.fail(str(missing), pytrace=False)
    kubeconfig = Path(k8s.kubeconfig)
    user_dir = tmp_path_factory.mktemp("readme")
    (user_dir / "deploy").symlink_to(manifests.MANIFEST_DIR.parent)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{kubectl.parent}:{os.environ['PATH']}"}
    nodes = [f"m-{secrets.token_hex(3)}" for _ in range(2)]
    try:
        for block in readme_steps(3, 4):
            done = subprocess.run(["sh", "-ec", block], cwd=user_dir, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"README step failed:\n{block}\n{done.stderr}"
        for node in nodes:
            k8s.create_node(node)
        yield nodes
    finally:
        for name in WORKLOADS:
            manifests.kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f",
                              str(manifests.MANIFEST_DIR / name), check=False)
        manifests.kubectl(kubeconfig, "-n", NAMESPACE, "delete", "--ignore-not-found", "secret/underlay-controller-tls",
                          "configmap/underlay-ca", check=False)
        manifests.kubectl(kubeconfig, "delete", "--ignore-not-found", "ippools.underlay.io/default", check=False)
        for node in nodes:
            manifests.kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", f"node/{node}", check=False)


def pods(k8s, name: str) -> list[client.V1Pod]:
    return client.CoreV1Api(k8s.api).list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/name={name}").items


def test_the_secret_ca_and_pool_are_what_the_workloads_mount_and_the_controller_reads(k8s, installed):
    core = client.CoreV1Api(k8s.api)
    assert set(core.read_namespaced_secret("underlay-controller-tls", NAMESPACE).data) == {"tls.crt", "tls.key"}
    assert set(core.read_namespaced_config_map("underlay-ca", NAMESPACE).data) == {"ca.crt"}
    pool = client.CustomObjectsApi(k8s.api).get_cluster_custom_object("underlay.io", "v1alpha1", "ippools", "default")
    assert pool["spec"]["subnet"] == "198.18.0.0/24" and pool["spec"]["default"] is True


def test_an_agent_pod_is_placed_on_every_node(k8s, installed):
    def placed() -> set[str]:
        return {pod.spec.node_name for pod in pods(k8s, "underlay-agent")} & set(installed)

    wait_for(lambda: placed() == set(installed), what=f"an agent pod bound to each of {installed}")


def test_the_two_controller_replicas_land_on_two_nodes(k8s, installed):
    """Each replica holds ports 6653 and 6680 of its node (host network): the scheduler never puts
    two on one node, and the two nodes here leave room for both."""
    def bound() -> list[str]:
        return [pod.spec.node_name for pod in pods(k8s, "underlay-controller") if pod.spec.node_name]

    nodes = wait_for(lambda: len(bound()) == 2 and bound(), what="both controller replicas bound to nodes")
    assert len(set(nodes)) == 2, nodes
    spec = pods(k8s, "underlay-controller")[0].spec
    assert {(p.container_port, p.host_port) for p in spec.containers[0].ports} == {(6653, 6653), (6680, 6680)}
