"""The lab's Kubernetes side (`underlay-lab up --kubernetes`): a control plane, the CRDs and the lab's
pool as an IPPool, a Node and a kubelet stand-in per lab node, and pods as Pod objects.

The control plane (deploy/k8s/testenv.py) lives in `<lab>/k8s` and outlives `up`, like the lab's
other daemons; `kubectl --kubeconfig <lab>/k8s/kubeconfig` works against it (the path is in
`underlay-lab status --json`). Pods are whatever the API has: `kubectl apply` of a Pod, Deployment
or StatefulSet, or `underlay-lab pod add`, which creates a Pod placed on its node by the real
scheduler (a nodeSelector on the node's hostname label). What each node attached is in its stand-in's
state file (deploy/lab/kubelet.py), which is what `status` and `demo` show.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import new_client_from_config

from deploy.k8s import crds
from deploy.k8s.testenv import APISERVER, ControlPlane
from deploy.lab import kubenode, netns, realnode
from deploy.lab.kubelet import load_attached
from deploy.lab.podsync import Attached
from deploy.lab.process import start_daemon, stop_pidfile, wait_until
from node_agent.state import AttachmentStore

NAMESPACE = "default"
POD_IMAGE = kubenode.PAUSE_IMAGE  # imported into a real node's containerd; the stand-ins run no containers
IP_ANNOTATION = "underlay.io/ip"
POOL_NAME = "default"


def controller_store() -> str:
    """The store the lab's controller uses with Kubernetes: the API when this checkout's controller
    has one (`store = "kubernetes"`, controller/kube), else its SQLite file."""
    from controller import config

    return "kubernetes" if hasattr(config, "KUBERNETES_STORE") else "sqlite"


class KubeLabError(RuntimeError):
    """Something in the lab's Kubernetes side a user can act on; the message says what."""


class KubeSide:
    def __init__(self, workdir: Path, prefix: str) -> None:
        self.workdir, self.prefix = workdir, prefix
        self.plane = ControlPlane(workdir / "k8s", detached=True, progress_notify="1s")  # an idle lab: 1 s

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def api(self) -> client.ApiClient:
        api: client.ApiClient = new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]
        return api

    @property
    def cluster_ca(self) -> Path:
        return self.workdir / "k8s" / "cluster-ca"

    def start(self, *, subnet: str, ranges: Iterable[str], reach_from: str, gateway: str | None = None,
              kubelets: bool = False) -> None:
        """Control plane, CRDs, the lab's pool as the `default` IPPool, and the API server's port
        inside namespace `reach_from` too (the controller's, see `reach_from`). With `kubelets`, the
        API server takes real kubelets' client certificates (deploy/lab/kubenode.py)."""
        self.plane.directory.mkdir(parents=True, exist_ok=True)
        if kubelets:
            authority = realnode.cluster_authority(self.cluster_ca)
            self.plane.extra_args = {APISERVER: kubenode.apiserver_args(authority.path)}
        self.plane.start()
        with self.api() as api:
            crds.install(api)
            spec: dict[str, Any] = {"subnet": subnet, "ips": list(ranges), "default": True}
            if gateway:
                spec["gateway"] = gateway
            client.CustomObjectsApi(api).create_cluster_custom_object("underlay.io", "v1alpha1", "ippools", {
                "apiVersion": "underlay.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL_NAME},
                "spec": spec})
        self.reach_from(reach_from)

    def reach_from(self, namespace: str, *, pidfile: Path | None = None) -> None:
        """The API server at the same address inside `namespace` (the controller's, or a real node's),
        through deploy/lab/tcpforward.py; returns once it accepts connections there."""
        port = int(self.plane.server.rsplit(":", 1)[1])
        pidfile = pidfile or self.forward_pidfile
        start_daemon([sys.executable, "-m", "deploy.lab.tcpforward", "--netns", namespace, "--port", str(port)],
                     pidfile=pidfile, logfile=pidfile.with_suffix(".log"))
        wait_until(lambda: _connects(namespace, port), timeout=10, error=KubeLabError,
                   what=f"the API server's port {port} inside {namespace}")

    @property
    def forward_pidfile(self) -> Path:
        return self.workdir / "k8s-forward.pid"

    def stop(self) -> None:
        """The nodes first (they talk to the API server), then the control plane."""
        for node_dir in realnode.node_dirs(self.workdir):
            realnode.RealNode(node_dir, prefix=self.prefix).teardown()
        for pidfile in sorted((self.workdir / "nodes").glob("*/kubelet.pid")):
            stop_pidfile(pidfile)
        stop_pidfile(self.forward_pidfile)
        self.plane.stop(remove=False)

    # --- nodes ------------------------------------------------------------------------------------

    def start_kubelet(self, node: str, *, node_ip: str, node_netns: str, conflist: str, cni_path: Iterable[Path],
                      node_dir: Path) -> None:
        argv = [sys.executable, "-m", "deploy.lab.kubelet", "--node", node, "--node-ip", node_ip,
                "--node-netns", node_netns, "--kubeconfig", str(self.kubeconfig), "--conflist", conflist,
                "--netns-prefix", self.prefix, "--state-file", str(node_dir / "kubelet.json"),
                *(arg for path in cni_path for arg in ("--cni-path", str(path)))]
        start_daemon(argv, pidfile=node_dir / "kubelet.pid", logfile=node_dir / "kubelet.log")

    def start_real_node(self, node: str, *, node_ip: str, node_netns: str, node_dir: Path,
                        cni_sources: Sequence[Path], cni_conf_dir: Path, images: Sequence[Path]) -> None:
        """containerd (the images imported), kubelet and kube-proxy in the node's namespace, the API
        server's port reachable there (deploy/lab/realnode.py)."""
        real = realnode.RealNode(node_dir, prefix=self.prefix)
        real.prepare(node=node, node_ip=node_ip, server=self.plane.server, apiserver_ca=self.apiserver_ca,
                     authority=realnode.cluster_authority(self.cluster_ca), cni_sources=cni_sources,
                     cni_conf_dir=cni_conf_dir)
        self.reach_from(node_netns, pidfile=node_dir / "k8s-forward.pid")
        real.start_containerd(node_netns)
        real.import_images(images)
        if kubenode.PAUSE_IMAGE not in real.images():
            raise KubeLabError(f"no {kubenode.PAUSE_IMAGE} among the images given ({', '.join(map(str, images)) or 'none'}): "
                               "build it with `make image` and pass its archive with --image")
        real.start_kubelet(node_netns, node=node, node_ip=node_ip)
        real.start_proxy(node_netns)

    def start_real_nodes(self, nodes: Mapping[str, Mapping[str, Any]], *, images: Sequence[Path]) -> None:
        """`start_real_node(name, **spec)` for every node at once: a node's slowest step is importing
        the images, each into its own containerd. No images given: deploy/image's."""
        images = list(images) or default_images()
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            for started in [pool.submit(self.start_real_node, name, images=images, **spec) for name, spec in nodes.items()]:
                started.result()

    @property
    def apiserver_ca(self) -> Path:
        return self.plane.directory / "certs" / "apiserver.crt"

    def wait_nodes_ready(self, names: Iterable[str], *, timeout: float = 90) -> None:
        wanted = set(names)
        with self.api() as api:
            core: Any = client.CoreV1Api(api)  # takes and gives plain dicts as well as models
            wait_until(lambda: wanted <= {n.metadata.name for n in core.list_node().items if _ready(n)},
                       timeout=timeout, what=f"nodes {', '.join(sorted(wanted))} to be Ready", error=KubeLabError)

    def attached(self) -> Iterator[tuple[str, Attached]]:
        """(node, attachment) of every pod the stand-ins or real kubelets gave a network."""
        for state in sorted((self.workdir / "nodes").glob("*/kubelet.json")):
            for attached in load_attached(state).values():
                yield state.parent.name, attached
        for node_dir in realnode.node_dirs(self.workdir):
            yield from ((node_dir.name, attached) for attached in self.real_attached(node_dir))

    def real_attached(self, node_dir: Path) -> Iterator[Attached]:
        """A real node's pods: the API's pods bound to it joined with what its agent attached
        (the records name each pod's namespace, made by containerd as /run/netns/cni-<uuid>)."""
        records = {(a.namespace, a.name): a for a in AttachmentStore(node_dir / "state").all()}
        with self.api() as api:
            core: Any = client.CoreV1Api(api)
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_dir.name}")
        for pod in pods.items:
            record = records.get((pod.metadata.namespace, pod.metadata.name))
            if record and pod.status.pod_ip == record.ip:
                yield Attached(pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, record.container_id,
                               Path(record.netns).name, record.ip, record.mac)

    # --- pods -------------------------------------------------------------------------------------

    def add_pod(self, name: str, *, node: str, ip: str | None = None, timeout: float = 60) -> tuple[str, Attached]:
        """A Pod for the scheduler to place on `node`; returns once its node attached it and its
        status has the address. `ip` becomes the `underlay.io/ip` annotation."""
        annotations = {IP_ANNOTATION: ip} if ip else None
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": {"underlay.io/lab-pod": name}, "annotations": annotations},
               "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "pause", "image": POD_IMAGE}]}}
        with self.api() as api:
            core: Any = client.CoreV1Api(api)  # takes and gives plain dicts as well as models
            try:
                created = core.create_namespaced_pod(NAMESPACE, pod)
            except client.ApiException as error:
                raise KubeLabError(f"pod {NAMESPACE}/{name}: {error.reason}: {_message(error)}") from None
            uid = created.metadata.uid
            wait_until(lambda: self._running(core, name, uid), timeout=timeout, error=KubeLabError,
                       what=lambda: f"pod {NAMESPACE}/{name} to run on {node} ({self._why_not(core, uid)})")
        return next((n, a) for n, a in self.attached() if a.uid == uid)

    def delete_pod(self, name: str, *, timeout: float = 60) -> None:
        """Delete the Pod and wait until its node ran DEL and the object is gone."""
        namespace, _, pod_name = name.rpartition("/")
        namespace = namespace or NAMESPACE
        with self.api() as api:
            core: Any = client.CoreV1Api(api)  # takes and gives plain dicts as well as models
            try:
                uid = core.read_namespaced_pod(pod_name, namespace).metadata.uid
                core.delete_namespaced_pod(pod_name, namespace)
            except client.ApiException as error:
                if error.status == 404:
                    raise KubeLabError(f"no pod {namespace}/{pod_name}") from None
                raise
            wait_until(lambda: not any(a.uid == uid for _, a in self.attached()) and not _exists(core, pod_name, namespace),
                       timeout=timeout, what=f"pod {namespace}/{pod_name} to be deleted", error=KubeLabError)

    def _running(self, core: Any, name: str, uid: str) -> bool:
        pod = core.read_namespaced_pod(name, NAMESPACE)
        return bool(pod.status.pod_ip) and any(a.uid == uid for _, a in self.attached())

    @staticmethod
    def _why_not(core: Any, uid: str) -> str:
        """The latest Warning event of the pod, for a timeout's message."""
        events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.uid={uid}").items
        warnings = [e for e in events if e.type == "Warning"]
        return f"{warnings[-1].reason}: {warnings[-1].message}" if warnings else "no event"


def default_images() -> list[Path]:
    """localhost/pause:3.10 and localhost/underlay:dev as containerd archives, built on first use
    (deploy/image/build.py: podman on a Debian base made by debootstrap, cached per machine)."""
    from deploy.image import build
    from deploy.image.podman import ImageError

    try:
        return list(build.ensure(log=lambda line: print(line, file=sys.stderr, flush=True)).values())
    except ImageError as error:
        raise KubeLabError(f"the images for the real kubelet cannot be built: {error} "
                           f"(or pass archives with --image)") from None


def _connects(namespace: str, port: int) -> bool:
    try:
        netns.connect_tcp(namespace, "127.0.0.1", port, timeout=1).close()
        return True
    except OSError:
        return False


def _message(error: client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body)


def _exists(core: Any, name: str, namespace: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
        return True
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise


def _ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
