"""deploy/kubernetes on the session's real API server, through kubectl built from the same release:
every file, and the kustomization as a whole, passes `kubectl apply --dry-run=server` (the API
server's own validation and admission: schemas, field names, the priority classes, ports, probes);
the RBAC, applied for real, gives each ServiceAccount what its code uses and nothing that matters
more (SubjectAccessReviews, asked of the API server's own authorizer), and the controller's leader
election runs on it with the ServiceAccount's own token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from controller.kube.client import Forbidden, Kube
from controller.kube.lease import KubeLease
from controller.leader import LeaseRecord
from deploy.k8s import manifests

NAMESPACE = "underlay-system"
CONTROLLER = f"system:serviceaccount:{NAMESPACE}:underlay-controller"
AGENT = f"system:serviceaccount:{NAMESPACE}:underlay-agent"
LEASE = "underlay-controller"
RBAC_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def kubeconfig(k8s) -> Path:
    try:
        manifests.kubectl_path()
    except manifests.MissingKubectl as missing:
        pytest.fail(str(missing), pytrace=False)
    return Path(k8s.kubeconfig)


@pytest.fixture(scope="module")
def namespace(kubeconfig: Path) -> str:
    """underlay-system, for real: a dry run of a namespaced object needs its namespace to exist."""
    manifests.kubectl(kubeconfig, "apply", "-f", str(manifests.MANIFEST_DIR / "namespace.yaml"))
    return NAMESPACE


@pytest.mark.parametrize("path", manifests.files(), ids=lambda p: str(p.relative_to(manifests.MANIFEST_DIR)))
def test_every_manifest_passes_the_api_servers_dry_run(kubeconfig, namespace, path):
    done = manifests.kubectl(kubeconfig, "apply", "--dry-run=server", "-f", str(path))
    lines = done.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), done.stdout
    assert sorted(line.split("/")[0].split(".")[0] for line in lines) == sorted(
        obj["kind"].lower() for obj in manifests.documents(path))


def test_the_kustomization_passes_the_api_servers_dry_run(kubeconfig, namespace):
    done = manifests.kubectl(kubeconfig, "apply", "-k", str(manifests.MANIFEST_DIR), "--dry-run=server")
    assert len(done.stdout.splitlines()) == len(list(manifests.objects())), done.stdout


def test_a_broken_manifest_fails_the_dry_run(kubeconfig, namespace, tmp_path):
    """The dry run can fail: the API server refuses a DaemonSet whose container port is not a port."""
    broken = manifests.find("DaemonSet", "underlay-agent")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 70000}]
    done = manifests.kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken),
                             check=False)
    assert done.returncode != 0 and "containerPort" in done.stderr


@pytest.fixture(scope="module")
def rbac(kubeconfig: Path, namespace: str, k8s) -> Iterator[client.AuthorizationV1Api]:
    """The RBAC of deploy/kubernetes applied for real; removed afterwards."""
    files = [manifests.MANIFEST_DIR / name for name in ("controller-rbac.yaml", "rbac.yaml")]
    for path in files:
        manifests.kubectl(kubeconfig, "apply", "-f", str(path))
    yield client.AuthorizationV1Api(k8s.api)
    for path in files:
        manifests.kubectl(kubeconfig, "delete", "--ignore-not-found", "-f", str(path))


def allowed(api: client.AuthorizationV1Api, user: str, verb: str, resource: str, *, group: str = "",
            namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> bool:
    service_account_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=["system:serviceaccounts", f"system:serviceaccounts:{service_account_namespace}",
                           "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(verb=verb, group=group, resource=resource, namespace=namespace,
                                                        name=name, subresource=subresource)))  # fmt: skip
    return bool(api.create_subject_access_review(review).status.allowed)


def eventually_allowed(api: client.AuthorizationV1Api, user: str, verb: str, resource: str, **kwargs) -> bool:
    """A binding takes effect once the API server's RBAC caches hold it, not when kubectl returns."""
    deadline = time.monotonic() + RBAC_TIMEOUT
    while not allowed(api, user, verb, resource, **kwargs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def controller_needs() -> list[tuple[str, str, str, str | None]]:
    """(verb, group, resource, subresource) of every rule of controller-rbac.yaml: the verbs the code
    uses (tests/controller/kube/test_rbac.py runs the controller on exactly these)."""
    role = manifests.documents(manifests.MANIFEST_DIR / "controller-rbac.yaml")[0]
    return [(verb, group, *(resource.partition("/")[::2]))  # type: ignore[misc]
            for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]]


def test_the_controller_may_do_what_its_code_does(rbac):
    for verb, group, resource, sub in controller_needs():
        assert eventually_allowed(rbac, CONTROLLER, verb, resource, group=group, subresource=sub or None,
                                  namespace="default" if resource in ("events", "pods") else None), (verb, resource)
    for verb in ("get", "update", "create"):
        name = None if verb == "create" else "underlay-controller"
        assert eventually_allowed(rbac, CONTROLLER, verb, "leases", group="coordination.k8s.io", namespace=NAMESPACE,
                                  name=name), verb
    assert eventually_allowed(rbac, CONTROLLER, "create", "tokenreviews", group="authentication.k8s.io")


@pytest.mark.parametrize("verb, resource, group, ns, name", [
    ("get", "secrets", "", NAMESPACE, "underlay-controller-tls"),
    ("list", "secrets", "", None, None),
    ("watch", "secrets", "", "kube-system", None),
    ("update", "leases", "coordination.k8s.io", NAMESPACE, "kube-scheduler"),  # another component's lease
    ("get", "leases", "coordination.k8s.io", "kube-system", "underlay-controller"),
    ("create", "leases", "coordination.k8s.io", "kube-system", None),
    ("delete", "leases", "coordination.k8s.io", NAMESPACE, "underlay-controller"),
    ("create", "pods", "", "default", None),
    ("delete", "pods", "", "default", "web-0"),
    ("delete", "nodes", "", None, "node-1"),
    ("update", "ippools", "underlay.io", None, "default"),  # pools are the user's: status only
    ("create", "configmaps", "", NAMESPACE, None),
    ("create", "serviceaccounts/token", "", NAMESPACE, "underlay-agent"),  # no minting agents' tokens
    ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None, None),
])  # fmt: skip
def test_the_controller_may_not(rbac, verb, resource, group, ns, name):
    eventually_allowed(rbac, CONTROLLER, "create", "tokenreviews", group="authentication.k8s.io")  # caches warm
    plural, _, sub = resource.partition("/")
    assert not allowed(rbac, CONTROLLER, verb, plural, group=group, namespace=ns, name=name,
                       subresource=sub or None)


@pytest.mark.parametrize("verb, resource, group, ns", [
    ("get", "secrets", "", NAMESPACE),
    ("list", "secrets", "", None),
    ("create", "ipallocations", "underlay.io", None),
    ("update", "ipallocations", "underlay.io", None),
    ("delete", "ipallocations", "underlay.io", None),
    ("list", "ipallocations", "underlay.io", None),
    ("patch", "ippools/status", "underlay.io", None),
    ("list", "pods", "", None),
    ("get", "pods", "", "default"),
    ("patch", "nodes", "", None),
    ("create", "tokenreviews", "authentication.k8s.io", None),
    ("update", "leases", "coordination.k8s.io", NAMESPACE),
])  # fmt: skip
def test_the_agent_may_do_nothing_with_the_api(rbac, verb, resource, group, ns):
    """The agent never calls the API (it speaks to the controller with a token for `underlay` only)."""
    eventually_allowed(rbac, CONTROLLER, "create", "tokenreviews", group="authentication.k8s.io")  # bindings in
    plural, _, sub = resource.partition("/")
    assert not allowed(rbac, AGENT, verb, plural, group=group, namespace=ns, subresource=sub or None)


@pytest.fixture
def as_controller(kubeconfig: Path, rbac, tmp_path: Path) -> Iterator[Kube]:
    """Our own client (controller/kube/client.py) with a token of the ServiceAccount underlay-controller,
    as its pod would hold one; the Lease it makes is removed afterwards."""
    assert eventually_allowed(rbac, CONTROLLER, "update", "leases", group="coordination.k8s.io", namespace=NAMESPACE,
                              name=LEASE)
    token = manifests.kubectl(kubeconfig, "-n", NAMESPACE, "create", "token", "underlay-controller").stdout.strip()
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"] = [{"name": "underlay-controller", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "underlay-controller"
    path = tmp_path / "controller.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = Kube.connect(kubeconfig=str(path))
    yield kube
    kube.close()
    manifests.kubectl(kubeconfig, "-n", NAMESPACE, "delete", "--ignore-not-found", f"lease/{LEASE}")


def test_the_controller_runs_its_leader_election_on_its_lease_and_no_other(as_controller):
    """controller/kube/lease.py, as the controller's ServiceAccount bound by rbac.yaml: its Lease is
    read, created and renewed; a Lease of another name, or in another namespace, cannot be touched."""
    lease = KubeLease(as_controller, NAMESPACE, LEASE)
    if lease.get() is None:
        lease.create(LeaseRecord(holder="underlay-controller-a", duration=15.0), timeout=5)
    held = lease.get()
    assert held is not None
    renewed = lease.update(LeaseRecord(holder="underlay-controller-a", duration=15.0, transitions=held.transitions,
                                       version=held.version), acquired=False, timeout=5)
    assert renewed.holder == "underlay-controller-a" and renewed.version != held.version
    for namespace, name in ((NAMESPACE, "kube-scheduler"), ("kube-system", LEASE)):
        with pytest.raises(Forbidden):
            KubeLease(as_controller, namespace, name).get()
