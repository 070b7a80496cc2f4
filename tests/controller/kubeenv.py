"""Fixtures for controller tests on the session's real API server (deploy/k8s/pytest_plugin.py).

`kube` is our own client (controller.kube.client) on it, with the CRDs of deploy/kubernetes/crds
installed; `kube_clean` empties the cluster-scoped kinds the controller owns (IPPools,
IPAllocations) and the nodes' uplink annotations around a test, since every test of the session
shares them; `kube_as` makes a client with only some rights (namespaces: the plugin's
`k8s_namespace`).
Imported by conftest.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kube.client import IPALLOCATIONS, IPPOOLS, NAMESPACES, NODES, AlreadyExists, Kube, Missing, Resource
from controller.kube.store import UPLINK_ANNOTATION
from deploy.k8s import crds

SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts")


def delete_all(kube: Kube, resource: Resource) -> None:
    for page in kube.list_pages(resource.path()):
        for obj in page.get("items", ()):
            try:
                kube.delete(resource.path(name=obj["metadata"]["name"]))
            except Missing:
                pass


def pod_namespace(kube: Kube, name: str) -> None:
    """A namespace that admits pods at once: its `default` ServiceAccount made here if the
    controller-manager has not made it yet (the benchmarks' pods, by the thousand)."""
    kube.create(NAMESPACES.path(), {"metadata": {"name": name}})
    try:
        kube.create(SERVICEACCOUNTS.path(namespace=name), {"metadata": {"name": "default"}})
    except AlreadyExists:
        pass


def ensure_node(kube: Kube, name: str, *, labels: dict[str, str] | None = None) -> None:
    """A Node object (nothing runs behind it: the store only annotates it)."""
    try:
        kube.create(NODES.path(), {"metadata": {"name": name, "labels": labels or {}}})
    except AlreadyExists:
        pass


@pytest.fixture
def kube_as(kube: Kube, k8s: Any, tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], Path]]:
    """Factory: the kubeconfig of a fresh ServiceAccount bound to a ClusterRole with these `rules`
    (its token from the TokenRequest API, as a pod's would be)."""
    name = f"as-{secrets.token_hex(3)}"
    roles = Resource("rbac.authorization.k8s.io", "v1", "clusterroles")
    bindings = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings")

    def make(rules: list[dict[str, Any]]) -> Path:
        kube.create(NAMESPACES.path(), {"metadata": {"name": name}})
        kube.create(SERVICEACCOUNTS.path(namespace=name), {"metadata": {"name": "ctl"}})
        kube.create(roles.path(), {"metadata": {"name": name}, "rules": rules})
        kube.create(bindings.path(), {
            "metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": name}]})  # fmt: skip
        _wait_authorized(kube, name, rules)
        token = kube.create(SERVICEACCOUNTS.path(namespace=name, name="ctl", sub="token"),
                            {"spec": {"expirationSeconds": 3600}})["status"]["token"]  # fmt: skip
        config = yaml.safe_load(Path(k8s.kubeconfig).read_text())
        config["users"] = [{"name": name, "user": {"token": token}}]
        for context in config["contexts"]:
            context["context"]["user"] = name
        path = tmp_path / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    yield make
    for resource in (bindings, roles, NAMESPACES):
        try:
            kube.delete(resource.path(name=name))
        except Missing:
            pass


def _wait_authorized(kube: Kube, namespace: str, rules: list[dict[str, Any]], *, timeout: float = 15.0) -> None:
    """A new binding takes effect once the apiserver's RBAC caches hold it, not when its create returns:
    wait until a SubjectAccessReview allows every verb of `rules` to the ServiceAccount."""
    reviews = Resource("authorization.k8s.io", "v1", "subjectaccessreviews")
    user = {"user": f"system:serviceaccount:{namespace}:ctl",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]}
    deadline = time.monotonic() + timeout
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    attributes = {"group": group, "resource": plural, "subresource": sub, "verb": verb}
                    while not kube.create(reviews.path(), {"spec": {**user, "resourceAttributes": attributes}})["status"].get("allowed"):
                        assert time.monotonic() < deadline, f"RBAC never allowed {attributes} to {user['user']}"
                        time.sleep(0.05)


@pytest.fixture(scope="session")
def kube(k8s: Any) -> Iterator[Kube]:
    crds.install(k8s.api)
    client = Kube.connect(kubeconfig=str(k8s.kubeconfig))
    yield client
    client.close()


def clean(kube: Kube) -> None:
    """No IPPools, no IPAllocations, no node uplinks: what a controller's first start finds."""
    for resource in (IPALLOCATIONS, IPPOOLS):
        delete_all(kube, resource)
    for page in kube.list_pages(NODES.path()):
        for node in page.get("items", ()):
            if UPLINK_ANNOTATION in (node["metadata"].get("annotations") or {}):
                kube.patch(NODES.path(name=node["metadata"]["name"]),
                           {"metadata": {"annotations": {UPLINK_ANNOTATION: None}}})  # fmt: skip


@pytest.fixture
def kube_clean(kube: Kube) -> Iterator[Kube]:
    clean(kube)
    yield kube
    clean(kube)

