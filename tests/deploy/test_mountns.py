"""deploy/lab/mountns.py on the real kernel: a bind inside a node's mount namespace is seen there and
not on the host, and a pin under /run/netns made inside shows on the host (the lab sees containerd's
pod namespaces)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from deploy.lab import mountns, realnode

pytestmark = pytest.mark.rig


def test_binds_stay_inside_and_netns_pins_come_out(tmp_path: Path) -> None:
    handle, source = tmp_path / "mnt.ns", tmp_path / "source"
    target = Path(f"/run/underlay-mountns-test-{secrets.token_hex(3)}")
    pin = Path(f"/run/netns/ulmnt-{secrets.token_hex(3)}")
    try:
        mountns.create(handle, {target: source})
        (source / "mark").write_text("node")
        inside = subprocess.run(mountns.enter(handle, ["ls", str(target)]), capture_output=True, text=True, check=True)
        assert inside.stdout.split() == ["mark"]
        assert list(target.iterdir()) == []  # the host's is the empty mount point
        shared = subprocess.run(mountns.enter(handle, ["findmnt", "-n", "-o", "PROPAGATION", "/"]),
                                capture_output=True, text=True, check=True).stdout
        assert "shared" in shared  # containerd takes HostToContainer volumes on / then
        pin.touch()
        subprocess.run(mountns.enter(handle, ["mount", "--bind", "/proc/self/ns/net", str(pin)]), check=True)
        assert pin in realnode.mounts_under(pin.parent)  # propagated to the host
    finally:
        realnode.unmount_under(pin) if pin.exists() else None
        pin.unlink(missing_ok=True)
        realnode.unmount_under(tmp_path)
        target.rmdir() if target.exists() else None
