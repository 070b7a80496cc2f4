"""What the attack tests share: a pod namespace on the segment, and "did this frame get there?".

A plain module (not a conftest) so tests import the names; tests/ has no __init__.py, so its
basename is unique in the suite.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from deploy.lab import frames, netns
from deploy.lab.control import Controller
from deploy.lab.rig import Host, Rig


def register(controller: Controller, *nodes: Host) -> None:
    """PUT each node's uplink MAC and IP, as its agent does on start."""
    for node in nodes:
        controller.request("PUT", f"/v1/nodes/{node.name}", {"mac": node.mac, "ip": node.ip}, node=node.name)


def place(controller: Controller, node: str, name: str, **extra: object) -> dict:
    """POST a macvlan pod for `node` as its agent would; the controller's answer."""
    body = {"container_id": f"c-{name}", "ifname": "eth0", "namespace": "default", "name": name,
            "mode": "macvlan", **extra}
    return controller.request("POST", f"/v1/nodes/{node}/pods", body, node=node)


@contextmanager
def pod_namespace(rig: Rig, node: Host, name: str, *, ip: str, mac: str) -> Iterator[Host]:
    """A pod's namespace: a macvlan child of `node`'s uplink carrying `mac` and `ip`/24."""
    pod = rig.add_macvlan_pod(name, node, cidr=f"{ip}/24", mac=mac)
    try:
        yield pod
    finally:
        netns.remove(pod.netns)
        rig.hosts.pop(name, None)


def marker() -> bytes:
    """A payload no other frame on the segment carries."""
    return b"underlay-attack-" + secrets.token_hex(8).encode()


def arrives(sender: Host, frame: bytes, receiver: Host, *, mark: bytes, timeout: float = 1.0,
            repeat: int = 3) -> bool:
    """Whether `frame`, sent `repeat` times from `sender`'s interface, shows up on `receiver`'s
    (recognised by `mark` in it) within `timeout` seconds of the capture starting."""
    listening = threading.Event()
    seen: list[bytes] = []

    def listen() -> None:
        seen.extend(frames.capture(receiver.netns, receiver.ifname, timeout=timeout, ready=listening.set,
                                   until=lambda got: mark in got))

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        listening.wait(5)
        for _ in range(repeat):
            frames.send(sender.netns, sender.ifname, frame)
    finally:
        listener.join()
    return any(mark in got for got in seen)
