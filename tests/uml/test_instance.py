"""UmlInstance on the host: a command's status and output come back, a hung instance is killed,
the host's filesystem stays untouched, and a tap in a rig namespace cables UML to the segment."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from deploy.lab.rig import Host, Rig
from deploy.uml import MissingUml, UmlInstance, find_kernel, tap_device


def leftovers(instance: UmlInstance) -> str:
    """Host processes still running for `instance` (its umid is on every one's command line)."""
    return subprocess.run(["pgrep", "-a", "-f", instance.umid], capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def uml_installed() -> None:
    try:
        find_kernel()
    except MissingUml as missing:
        pytest.fail(str(missing), pytrace=False)


def test_command_status_and_output_come_back_and_host_stays_untouched(tmp_path: Path) -> None:
    probe = Path("/var/lib/underlay-uml-probe")
    instance = UmlInstance(tmp_path, command=(
        f"echo hello from $(uname -r); echo kept > /run/uml-host/note; touch {probe}; exit 3"))

    result = instance.run(timeout=60)

    assert (result.returncode, result.timed_out) == (3, False), result.tail()
    assert f"hello from {instance.kernel.version}" in result.console
    assert "Read-only file system" in result.console and not probe.exists()
    assert (tmp_path / "note").read_text() == "kept\n"
    assert result.boot_seconds is not None and 0 < result.boot_seconds < result.wall_seconds
    assert leftovers(instance) == ""


def test_instance_past_its_time_is_killed(tmp_path: Path) -> None:
    instance = UmlInstance(tmp_path, command="sleep 600")

    result = instance.run(timeout=8)

    assert (result.returncode, result.timed_out) == (None, True)
    assert leftovers(instance) == ""


def test_missing_uml_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(MissingUml, match="user-mode-linux"):
        find_kernel(binary=tmp_path / "linux.uml")
    with pytest.raises(MissingUml, match="user-mode-linux"):
        find_kernel(modules_root=tmp_path)


def test_taps_outside_a_namespace_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="namespace"):
        UmlInstance(tmp_path, command="true", taps=["tap0"])


@pytest.mark.rig
def test_ipvlan_pod_inside_uml_reaches_rig_host_through_tap(tmp_path: Path, rig: Rig, bridge: str,
                                                            make_host: Callable[..., Host]) -> None:
    """UML's eth0 is a tap port of the rig's bridge: an ipvlan pod inside answers from eth0's MAC."""
    host = make_host("t1", cidr="198.18.4.1/24")
    rig.ovs.ofctl("add-flow", bridge, "actions=NORMAL")
    uml_mac, pod_ip = "02:00:c6:12:04:02", "198.18.4.10"
    with tap_device(rig.mgmt_ns, f"{rig.prefix}tap") as tap:
        rig.ovs.add_port(bridge, tap, 100)
        result = UmlInstance(tmp_path, taps=[tap], netns=rig.mgmt_ns, command=f"""
            ip link set eth0 address {uml_mac} && ip link set eth0 up
            ip netns add pod && ip -n pod link set lo up
            ip link add ipv0 link eth0 type ipvlan mode l2 && ip link set ipv0 netns pod
            ip -n pod addr add {pod_ip}/24 dev ipv0 && ip -n pod link set ipv0 up
            ip netns exec pod ping -n -c 2 -W 2 {host.ip}
        """).run(timeout=60)

    assert result.ok, result.tail()
    with IPRoute(netns=host.netns) as ipr:
        assert {n.get("NDA_LLADDR") for n in ipr.get_neighbours(dst=pod_ip)} == {uml_mac}
