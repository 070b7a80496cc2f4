"""An API server restart under a running store and watch, on a control plane of the test's own (the
session's stays up for the other tests): writes fail while it is down, are kept, and land once it is
back; a thread whose own writes are only a node's port is not held up meanwhile; the watch comes
back by itself and catches up."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes.config import new_client_from_config

from controller.errors import TemporaryError
from controller.kube.client import IPALLOCATIONS, NODES, Kube
from controller.kube.reflector import Reflector
from controller.kube.store import KubeStore
from controller.store import Mode, Node, Pod
from deploy.k8s.testenv import APISERVER, ControlPlane, MissingBinary
from deploy.lab.process import start_daemon, stop_pidfile
from deploy.k8s import crds

WAIT = 60.0


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    own = ControlPlane.temporary()
    try:
        own.start()
    except MissingBinary as missing:
        own.stop()
        pytest.fail(str(missing), pytrace=False)
    try:
        yield own
    finally:
        own.stop()


def restart_apiserver(plane: ControlPlane, kube: Kube, *, while_down: object = None) -> None:
    """Kill the API server, run `while_down()`, start it again with the same command line."""
    pid = plane.pids()[APISERVER]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    pidfile, logfile = plane.directory / f"{APISERVER}.pid", plane.directory / f"{APISERVER}.log"
    stop_pidfile(pidfile, sig=signal.SIGKILL, timeout=20)  # a crash: no goodbye to its clients
    if callable(while_down):
        while_down()
    start_daemon(argv, pidfile=pidfile, logfile=logfile)
    deadline = time.monotonic() + WAIT
    while True:  # its readiness: the first answer to a request
        try:
            kube.get(IPALLOCATIONS.path())
            return
        except TemporaryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_writes_and_watches_survive_an_api_server_restart(plane: ControlPlane) -> None:
    with new_client_from_config(str(plane.kubeconfig)) as api:
        crds.install(api)
    kube = Kube.connect(kubeconfig=str(plane.kubeconfig))
    kube.create(NODES.path(), {"metadata": {"name": "n1"}})
    cache = Reflector(kube, IPALLOCATIONS, transform=lambda obj: obj["spec"]["containerID"]).start()
    store = KubeStore(kube, write_timeout=1.0)
    store.load()
    try:
        assert cache.wait_synced(WAIT)
        with store.transaction() as tx:
            tx.put_pod(Pod("a", "eth0", "n1", "default", "a", "p", "198.18.0.100", "02:55:c6:12:00:64", Mode.MACVLAN))
        store.sync()
        assert cache.wait_for(lambda items: items.get("198.18.0.100") == "a", timeout=WAIT)

        def release_while_down() -> None:
            with store.transaction() as tx:
                tx.delete_pod("a", "eth0")
                tx.mark_released("198.18.0.100", time.time())
            with pytest.raises(TemporaryError, match="writes not accepted by the API server"):
                store.sync()  # the DEL fails: the runtime will ask again
            with ThreadPoolExecutor(1) as other:  # another thread (the node locator) learns a port:
                other.submit(locate_node).result()  # its sync does not wait for the DEL's write, nor fails

        def locate_node() -> None:
            with store.transaction() as tx:
                tx.put_node(Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4))
            store.sync()

        restart_apiserver(plane, kube, while_down=release_while_down)
        store.sync()  # the write kept from before lands now
        assert kube.get(IPALLOCATIONS.path(name="198.18.0.100"))["status"]["phase"] == "Cooldown"
        with store.transaction() as tx:
            tx.put_pod(Pod("b", "eth0", "n1", "default", "b", "p", "198.18.0.101", "02:55:c6:12:00:65", Mode.MACVLAN))
        store.sync()
        assert cache.wait_for(lambda items: items.get("198.18.0.101") == "b", timeout=WAIT)  # the watch is back
        assert store.failure is None
    finally:
        cache.stop()
        store.close()
    assert KubeStore(kube).load().nodes == (Node("n1", "02:00:00:00:01:01", "198.18.0.11", dpid=1, port=4),)
    kube.close()
