"""A real node's containerd on its own (deploy/lab/realnode.py): a restart waits for the old process, and
teardown of a half-made node (containerd up, no kubelet, no lab.json) leaves nothing behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab import netns, pki, realnode

pytestmark = pytest.mark.rig


@pytest.fixture
def node(tmp_path) -> Iterator[tuple[realnode.RealNode, str]]:
    """A node prepared and its containerd started, in a namespace of its own; torn down afterwards."""
    try:
        realnode.binaries()
    except realnode.NodeError as missing:
        pytest.fail(str(missing), pytrace=False)
    name = f"ulrn{secrets.token_hex(2)}"
    netns.create(name)
    real = prepared(tmp_path, prefix=name)
    try:
        real.start_containerd(name)
        yield real, name
    finally:
        real.teardown()
        netns.remove(name)


def prepared(tmp_path: Path, *, prefix: str) -> realnode.RealNode:
    real = realnode.RealNode(tmp_path / "nodes" / "node1", prefix=prefix)
    real.prepare(node="node1", node_ip="198.18.0.11", server="https://127.0.0.1:1", apiserver_ca=tmp_path / "ca",
                 authority=pki.Authority.create(tmp_path / "ca"), cni_sources=[], cni_conf_dir=tmp_path / "net.d")
    return real


def gone(pid: int) -> bool:
    """Exited: no process, or a zombie (this test's own child, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def pid_of(real: realnode.RealNode) -> int:
    return int(real.files.pidfile("containerd").read_text())


def test_containerd_restarts_only_after_the_old_process_is_gone(node):
    real, namespace = node
    old = pid_of(real)
    assert old in realnode.cgroup_pids(real.cgroup)  # its shims would follow it there
    real.restart_containerd(namespace)
    new = pid_of(real)
    assert new != old and gone(old)
    assert real.ctr("version").returncode == 0 and new in realnode.cgroup_pids(real.cgroup)


def test_teardown_of_a_half_made_node_leaves_no_process_cgroup_or_file(node, tmp_path):
    real, _ = node
    pid = pid_of(real)
    real.teardown()
    assert gone(pid)
    assert not [h for h in realnode.hierarchies() if (h / real.cgroup).exists()]
    assert not real.files.root.exists() and not realnode.mounts_under(tmp_path)
    real.teardown()  # twice is fine


def test_a_node_without_its_namespace_fails_with_containerds_log(tmp_path):
    real = prepared(tmp_path, prefix=f"ulrn{secrets.token_hex(2)}")
    try:
        with pytest.raises(realnode.NodeError, match="containerd exited; end of .*containerd.log"):
            real.start_containerd("ulrn-no-such-namespace", timeout=10)
    finally:
        real.teardown()
    assert not real.files.root.exists() and not [h for h in realnode.hierarchies() if (h / real.cgroup).exists()]
