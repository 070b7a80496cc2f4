"""pytest plugin: a real Kubernetes control plane for the session (deploy/k8s/testenv.py).

Fixtures:
- `k8s` (session): `Kube` with `kubeconfig` (a path) and `api` (a ready `kubernetes.client.ApiClient`,
  admin), started on first use and stopped at the end of the session.
- `k8s_namespace` (function): a fresh namespace whose `default` ServiceAccount exists (so Pods are
  admitted), deleted afterwards.

A machine without the binaries or etcd fails the tests with one line naming the command that builds
or installs them, never a skip. The terminal summary reports the apiserver's ready time and each
process's resident memory. Load it with `pytest_plugins` in the root conftest.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.config import new_client_from_config

from deploy.k8s.testenv import ControlPlane, MissingBinary

READY_KEY = pytest.StashKey["list[str]"]()
SERVICE_ACCOUNT_TIMEOUT = 30.0
NODE_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


@dataclass
class Kube:
    """The session's control plane as tests use it."""

    kubeconfig: Path
    api: client.ApiClient
    plane: ControlPlane
    measurements: list[str] = field(default_factory=list)

    def create_namespace(self, prefix: str = "t") -> str:
        """A new namespace with a unique name, returned once its `default` ServiceAccount exists
        (the controller-manager makes it; until then the apiserver refuses Pods)."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        core = client.CoreV1Api(self.api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait_for_service_account(core, name)
        return name

    def create_node(self, name: str, *, labels: dict[str, str] | None = None) -> client.V1Node:
        """A Node object that the scheduler can bind pods to (Ready, room for 110 pods), with no
        kubelet behind it: nothing runs its pods. The node controller marks it NotReady after its
        grace period (50 s) since nothing renews its status."""
        core = client.CoreV1Api(self.api)
        labels = {"kubernetes.io/hostname": name, **(labels or {})}
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                  "message": "a test's node", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                  "capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY}
        return core.patch_node_status(name, {"status": status})


def wait_for_service_account(core: client.CoreV1Api, namespace: str, *,
                             timeout: float = SERVICE_ACCOUNT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except client.ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


@pytest.fixture(scope="session")
def k8s(request: pytest.FixtureRequest) -> Iterator[Kube]:
    plane = ControlPlane.temporary()
    try:
        plane.start()
    except MissingBinary as missing:
        plane.stop()
        pytest.fail(str(missing), pytrace=False)
    api = new_client_from_config(str(plane.kubeconfig))  # type: ignore[no-untyped-call]
    kube = Kube(plane.kubeconfig, api, plane)
    try:
        wait_for_service_account(client.CoreV1Api(api), "default")
        kube.measurements.append(f"apiserver ready in {plane.ready_seconds:.2f} s; RSS at start: "
                                 + ", ".join(f"{name} {_mib(size)}" for name, size in plane.rss().items()))
        yield kube
        kube.measurements.append("RSS at the end: " + ", ".join(
            f"{name} {_mib(size)}" for name, size in plane.rss().items()))
    finally:
        request.config.stash[READY_KEY] = kube.measurements
        api.close()
        plane.stop()


@pytest.fixture
def k8s_namespace(k8s: Kube) -> Iterator[str]:
    name = k8s.create_namespace()
    yield name
    client.CoreV1Api(k8s.api).delete_namespace(name)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for line in config.stash.get(READY_KEY, []):
        terminalreporter.write_line(f"k8s: {line}")
