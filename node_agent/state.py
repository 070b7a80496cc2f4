"""The agent's record of the attachments it made: one small JSON file per (container, ifname).

Why a file at all: a pod's namespace is only known from CNI_NETNS at ADD time, and DEL may come
without it, after an agent restart. The records live on tmpfs (/run), like host-local's leases: a
reboot removes every pod and every record together. They are a hint, never the truth: on start the
agent keeps only the records whose link still exists in the kernel (see `Agent.rebuild`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str
    netns: str
    ip: str
    prefix: int
    mac: str
    mode: str
    namespace: str | None = None
    name: str | None = None
    standalone: bool = False  # addresses from a delegated IPAM plugin: nothing to release at the controller
    ip6: str | None = None  # a dual-stack attachment's IPv6 address (`ip` is then its IPv4 one)
    vlan: int | None = None  # a VLAN pool's: the link is a child of `parent`, the uplink's VLAN sub-interface
    parent: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    @property
    def ips(self) -> tuple[str, ...]:
        """Every address of the attachment, IPv4 first."""
        return (self.ip, self.ip6) if self.ip6 else (self.ip,)

    @property
    def pod(self) -> str:
        return pod_label(self.namespace, self.name, self.container_id)


def pod_label(namespace: str | None, name: str | None, container_id: str) -> str:
    """How errors and logs name a pod: `default/web-0`, or the container when Kubernetes is absent."""
    return f"{namespace}/{name}" if namespace and name else f"container {container_id[:12]}"


def owner(namespace: str | None, name: str | None, container_id: str) -> dict[str, str]:
    """The namespace and name the controller records for a pod (it requires both, as Kubernetes
    names): outside Kubernetes, the runtime's container ID under the namespace `container`, made a
    pod name (lower case, every run of '_', '.', '-' one '-': `My_Box.1` is `my-box-1`)."""
    if namespace and name:
        return {"namespace": namespace, "name": name}
    return {"namespace": "container", "name": re.sub(r"[^a-z0-9]+", "-", container_id.lower()).strip("-")}


class AttachmentStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._items = {a.key: a for a in self._load()}

    def _path(self, container_id: str, ifname: str) -> Path:
        return self.directory / f"{container_id}_{ifname}.json"

    def _load(self) -> list[Attachment]:
        items = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                items.append(Attachment(**json.loads(path.read_text())))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)  # a torn write from a crash: the kernel check decides
        return items

    def get(self, container_id: str, ifname: str) -> Attachment | None:
        with self._lock:
            return self._items.get((container_id, ifname))

    def all(self) -> list[Attachment]:
        with self._lock:
            return list(self._items.values())

    def put(self, attachment: Attachment) -> None:
        path = self._path(*attachment.key)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(attachment)))
        os.replace(tmp, path)
        with self._lock:
            self._items[attachment.key] = attachment

    def remove(self, container_id: str, ifname: str) -> None:
        self._path(container_id, ifname).unlink(missing_ok=True)
        with self._lock:
            self._items.pop((container_id, ifname), None)
