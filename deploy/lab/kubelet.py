"""The lab's stand-in for kubelet's network half, one process per lab node (`underlay-lab up --kubernetes`).

A real kubelet needs a container runtime; the lab has none, and the network is all it shows. So this
process does for its node what kubelet and the runtime do for a pod's network, against the real API
server, and nothing else:
- registers its Node, keeps it Ready (node status now and then, the node Lease every 10 s: without
  them the node controller marks the node NotReady and taints it);
- watches the Pods bound to its node (list, then watch from the list's resourceVersion, relist on
  410 Gone), and for each new one makes a network namespace and runs the node's CNI chain with ADD
  and the pod's real namespace, name and UID in CNI_ARGS, then writes status.podIP(s) and
  `phase: Running` with the pod Ready;
- runs DEL when the pod goes (deleted, or made again under its name with a new UID), removes the
  namespace, and deletes a terminating pod for good as kubelet does once its sandbox is gone;
- a failed ADD becomes a `FailedCreatePodSandBox` Warning Event on the pod with the plugin's message,
  and is retried with a growing delay.
What it made is kept in a JSON file, so a restarted stand-in still DELs what it ADDed. It does not
tear pods down when it stops: neither does kubelet.

Decisions and object shapes are in deploy/lab/podsync.py; this module only does the I/O.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.config import new_client_from_config

from controller.logs import kv
from deploy.lab import netns, podsync
from deploy.lab.podsync import Attached, Object
from deploy.lab.runtime import Attachment, CniError, in_namespace, run_chain

LOG = logging.getLogger("underlay.lab.kubelet")
LEASE_EVERY, STATUS_EVERY = 10.0, 60.0  # kubelet's defaults: lease renewals, node status reports
WATCH_SECONDS = 5  # a watch ends this often, so retries of failed ADDs run without an event
RETRY_FIRST, RETRY_MAX = 2.0, 60.0


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StandIn:
    """One node's pods, as kubelet's network half sees them."""

    def __init__(self, api: client.ApiClient, *, node: str, node_ip: str, node_netns: str | None,
                 conflist: Path, cni_path: Sequence[Path], netns_prefix: str, state_file: Path,
                 now: Callable[[], float] = time.time) -> None:
        self.api = api
        self.core: Any = client.CoreV1Api(api)  # takes plain dicts as well as models
        self.coordination: Any = client.CoordinationV1Api(api)
        self.node, self.node_ip, self.node_netns = node, node_ip, node_netns
        self.conflist, self.cni_path = conflist, list(cni_path)
        self.netns_prefix, self.state_file, self.now = netns_prefix, state_file, now
        self.pods: dict[str, Object] = {}
        self.attached = load_attached(state_file)
        self.retry: dict[str, tuple[float, float]] = {}  # uid -> (not before, next delay)
        self.node_uid = ""

    # --- the node ---------------------------------------------------------------------------------

    def register(self) -> None:
        try:
            self.core.create_node(podsync.node_object(self.node, labels={"underlay.io/lab-node": "true"}))
        except client.ApiException as error:
            if error.status != 409:
                raise
        self.node_uid = str(self.core.read_node(self.node).metadata.uid)
        self.report_node()
        self.renew_lease()

    def report_node(self) -> None:
        self.core.patch_node_status(self.node, podsync.node_status(self.node, ip=self.node_ip,
                                                                   now=rfc3339(self.now())))

    def renew_lease(self) -> None:
        lease = podsync.lease_object(self.node, node_uid=self.node_uid, now=micro_time(self.now()))
        try:
            self.coordination.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": lease["spec"]})
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def heartbeat(self, stop: threading.Event) -> None:
        last_status = self.now()
        while not stop.wait(LEASE_EVERY):
            try:
                self.renew_lease()
                if self.now() - last_status >= STATUS_EVERY:
                    self.report_node()
                    last_status = self.now()
            except client.ApiException as error:
                LOG.warning(kv("heartbeat-failed", node=self.node, status=error.status, reason=error.reason))
            except Exception as error:  # noqa: BLE001 - the API server may be restarting: next beat
                LOG.warning(kv("heartbeat-failed", node=self.node, error=error))

    # --- pods -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Register, then keep the node's pods in sync until `stop` is set."""
        self.register()
        threading.Thread(target=self.heartbeat, args=(stop,), daemon=True, name="heartbeat").start()
        while not stop.is_set():
            try:
                self.list_and_watch(stop)
            except client.ApiException as error:
                if error.status != 410:
                    LOG.warning(kv("watch-failed", node=self.node, status=error.status, reason=error.reason))
                    stop.wait(1)
            except Exception as error:  # noqa: BLE001 - connection lost: list again
                LOG.warning(kv("watch-failed", node=self.node, error=error))
                stop.wait(1)

    def list_and_watch(self, stop: threading.Event) -> None:
        selector = f"spec.nodeName={self.node}"
        listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
        plain: Any = self.api.sanitize_for_serialization  # models to the API's JSON (camelCase)
        self.pods = {pod.metadata.uid: plain(pod) for pod in listed.items}
        version = listed.metadata.resource_version
        self.sync()
        while not stop.is_set():
            watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]
            for event in watcher.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                        resource_version=version, timeout_seconds=WATCH_SECONDS,
                                        allow_watch_bookmarks=True):
                pod = event["raw_object"]
                if event["type"] == "ERROR":
                    raise client.ApiException(status=pod.get("code", 500), reason=pod.get("message"))
                version = pod["metadata"]["resourceVersion"]
                if event["type"] == "DELETED":
                    self.pods.pop(podsync.uid_of(pod), None)
                elif event["type"] != "BOOKMARK":
                    self.pods[podsync.uid_of(pod)] = pod
                self.sync()
            self.sync()  # retries due

    def sync(self) -> None:
        """Act on the plan until nothing is left to do now (a DEL can make a pod ready to finalize)."""
        for _ in range(3):
            todo = podsync.plan(self.pods.values(), self.attached, node=self.node)
            for attached in todo.delete:
                self.delete(attached)
            for pod in todo.add:
                if self.due(podsync.uid_of(pod)):
                    self.add(pod)
            for pod, attached in todo.report:
                self.report(pod, attached)
            for pod in todo.finalize:
                self.finalize(pod)
            if not (todo.delete or todo.finalize):
                return

    def due(self, uid: str) -> bool:
        return self.retry.get(uid, (0.0, 0.0))[0] <= self.now()

    def add(self, pod: Object) -> None:
        meta, uid = pod["metadata"], podsync.uid_of(pod)
        container_id = secrets.token_hex(32)
        name = podsync.netns_name(self.netns_prefix, meta["namespace"], meta["name"])
        netns.remove(name)  # a namespace left by a stand-in killed mid-ADD
        netns.create(name)
        try:
            result = run_chain(self.chain(), "ADD", Attachment(container_id, f"/run/netns/{name}",
                                                               args=podsync.cni_args(pod, container_id)),
                               cni_path=self.cni_path, execute=in_namespace(self.node_netns))
        except CniError as error:
            netns.remove(name)
            self.failed(pod, str(error))
            return
        except BaseException:
            netns.remove(name)
            raise
        sandbox = next(i for i in result["interfaces"] if i.get("sandbox"))
        attached = Attached(uid, meta["namespace"], meta["name"], container_id, name,
                            result["ips"][0]["address"].split("/")[0], sandbox["mac"], result)
        self.attached[uid] = attached
        self.retry.pop(uid, None)
        save_attached(self.state_file, self.attached)
        LOG.info(kv("added", pod=attached.key, ip=attached.ip, netns=name))
        self.report(pod, attached)

    def failed(self, pod: Object, message: str) -> None:
        uid = podsync.uid_of(pod)
        delay = self.retry.get(uid, (0.0, RETRY_FIRST))[1]
        self.retry[uid] = (self.now() + delay, min(delay * 2, RETRY_MAX))
        LOG.warning(kv("add-failed", pod=podsync.key_of(pod), retry_in=delay, error=message))
        event = podsync.sandbox_failed_event(pod, node=self.node, message=message, now=rfc3339(self.now()))
        try:
            self.core.create_namespaced_event(pod["metadata"]["namespace"], event)
        except client.ApiException as error:
            LOG.warning(kv("event-failed", pod=podsync.key_of(pod), status=error.status))

    def report(self, pod: Object, attached: Attached) -> None:
        status = podsync.running_status(pod, attached, host_ip=self.node_ip, now=rfc3339(self.now()))
        try:
            self.core.patch_namespaced_pod_status(attached.name, attached.namespace, status)
        except client.ApiException as error:
            if error.status != 404:  # gone meanwhile: the next plan deletes the attachment
                raise

    def delete(self, attached: Attached) -> None:
        args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": attached.namespace, "K8S_POD_NAME": attached.name,
                "K8S_POD_INFRA_CONTAINER_ID": attached.container_id, "K8S_POD_UID": attached.uid}
        try:
            run_chain(self.chain(), "DEL", Attachment(attached.container_id, f"/run/netns/{attached.netns}",
                                                      args=args),
                      cni_path=self.cni_path, execute=in_namespace(self.node_netns), prev_result=dict(attached.result))
        except CniError as error:  # kept: the next sync tries again
            LOG.warning(kv("del-failed", pod=attached.key, error=error))
            return
        netns.remove(attached.netns)
        del self.attached[attached.uid]
        save_attached(self.state_file, self.attached)
        LOG.info(kv("deleted", pod=attached.key, ip=attached.ip))

    def finalize(self, pod: Object) -> None:
        meta = pod["metadata"]
        options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"]))
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise

    def chain(self) -> dict[str, Any]:
        conflist: dict[str, Any] = json.loads(self.conflist.read_text())
        return conflist


def load_attached(path: Path) -> dict[str, Attached]:
    if not path.exists():
        return {}
    return {uid: Attached(**fields) for uid, fields in json.loads(path.read_text()).items()}


def save_attached(path: Path, attached: dict[str, Attached]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({uid: asdict(a) for uid, a in attached.items()}, indent=1))
    temporary.replace(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.kubelet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", required=True)
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--node-netns", help="the node's network namespace, where the CNI plugins run")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--conflist", type=Path, required=True, help="the node's CNI network configuration list")
    parser.add_argument("--cni-path", type=Path, action="append", required=True)
    parser.add_argument("--netns-prefix", required=True, help="pods' namespaces are <prefix>-<namespace>.<pod>")
    parser.add_argument("--state-file", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    api = new_client_from_config(str(args.kubeconfig))  # type: ignore[no-untyped-call]
    stand_in = StandIn(api, node=args.node, node_ip=args.node_ip, node_netns=args.node_netns,
                       conflist=args.conflist, cni_path=args.cni_path, netns_prefix=args.netns_prefix,
                       state_file=args.state_file)
    stand_in.run(threading.Event())  # SIGTERM ends the process: every change is saved when made
    return 0


if __name__ == "__main__":
    sys.exit(main())
