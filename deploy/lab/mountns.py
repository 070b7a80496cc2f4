"""A mount namespace of a real lab node's own, so node-wide paths are one per node.

A DaemonSet's hostPath volumes name machine-wide paths (/opt/cni/bin, /etc/cni/net.d, /run/underlay),
one per machine: two real nodes of the lab in the host's mount namespace would share them, and
either would write the shared machine's own /opt/cni/bin. So containerd, kubelet and kube-proxy of a
node run in a mount namespace where each of those paths is a bind mount of a directory of the node's.

What stays shared is /run/netns: containerd pins its pods' network namespaces there, and the lab
(the host) must see them (`ip netns exec` into a pod, teardown). It is a shared mount (iproute2 makes
it one), and the namespace is made with propagation unchanged, so the pins show on both sides. The
mount each bind target lives on is made a slave first, so nothing bound here ever shows on the host,
whatever the host's propagation (on a systemd host `/` and `/run` are shared). Then `/` is made
shared inside (a peer group of its own, or shared and slave on a systemd host): containerd refuses a
HostToContainer volume whose mount is neither shared nor slave, and it finds the agent's
/var/run/netns on `/`, not resolving the /var/run symlink; this machine's `/` is private.

The namespace is kept by a bind mount of its nsfs file (`<node>/kubelet/mnt.ns`), which the node's
teardown unmounts with the rest of its mounts (realnode.unmount_under); once its processes are gone
too, the kernel frees the namespace and every mount made in it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class MountNamespaceError(RuntimeError):
    """The node's mount namespace cannot be made; the message says which step failed."""


def create(handle: Path, binds: Mapping[Path, Path]) -> None:
    """A new mount namespace kept at `handle`, each `target` of `binds` in it a bind of its source.

    The targets are made on the host if missing (empty directories: the bind needs a mount point)."""
    handle.parent.mkdir(parents=True, exist_ok=True)
    handle.touch()
    _run(["unshare", f"--mount={handle}", "--propagation", "unchanged", "true"], what="make the namespace")
    for target, source in binds.items():
        source.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        holder = _run(enter(handle, ["findmnt", "-n", "-o", "TARGET", "-T", str(target)]),
                      what=f"find the mount of {target}").strip()
        _run(enter(handle, ["mount", "--make-slave", holder]), what=f"make {holder} a slave")
        _run(enter(handle, ["mount", "--bind", str(source), str(target)]), what=f"bind {source} on {target}")
    _run(enter(handle, ["mount", "--make-shared", "/"]), what="make / shared")


def enter(handle: Path, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the namespace (its mounts only: the network namespace is the caller's)."""
    return ["nsenter", f"--mount={handle}", *argv]


def _run(argv: list[str], *, what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise MountNamespaceError(f"cannot {what}: {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout
