"""`underlay-lab up --topology line:3`: three switches in a row, a node at each end, the external
host on s1. Frames cross every cable; a cut of the only path makes the far pod unreachable and its
return brings it back. A topology the lab does not know is refused before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.lab import netns
from deploy.lab.lab import Lab
from deploy.lab.process import wait_until
from labcli import lab_cli, running_lab, status

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("line")


@pytest.fixture(scope="module")
def lab(lab_dir):
    with running_lab(lab_dir, "--topology", "line:3", "--nodes", "2", "--pods-per-node", "1") as run:
        yield run


def reaches(the_lab: Lab, ip: str) -> bool:
    external = the_lab.state.external["netns"]
    return netns.run(external, ["ping", "-n", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def test_nodes_at_both_ends_and_frames_cross_every_cable(lab, lab_dir):
    fabric = status(lab)["fabric"]
    the_lab = Lab(lab_dir, progress=lambda _: None)
    far = next(p for p in the_lab.pods().values() if p.node == "node2")

    assert [(s["name"], s["hosts"]) for s in fabric["switches"]] == [
        ("s1", ["external", "node1"]), ("s2", []), ("s3", ["node2"])]
    assert [(link["a"], link["b"]) for link in fabric["links"]] == [("s1:1", "s2:1"), ("s2:2", "s3:1")]
    assert the_lab.exchange("external", far.name).ok
    assert the_lab.exchange("node1-pod1", far.name).ok


def test_cutting_the_only_path_and_restoring_it(lab, lab_dir):
    the_lab = Lab(lab_dir, progress=lambda _: None)
    far = next(p for p in the_lab.pods().values() if p.node == "node2")

    lab("link", "down", "s3", "s2")
    try:
        assert not reaches(the_lab, far.ip)
    finally:
        lab("link", "up", "s2", "s3")

    wait_until(lambda: reaches(the_lab, far.ip), timeout=20, what=f"{far.name} reachable again over s2-s3")


@pytest.mark.parametrize("args, says", [
    (("--topology", "ring"), "--topology ring: one of single, leaf-spine, line:N"),
    (("--topology", "line:12"), "--topology line:12: a line of 2 to 8 switches"),
    (("--topology", "leaf-spine", "--kubernetes", "--kubelet", "2", "--in-cluster"),
     "--topology leaf-spine with --in-cluster: the in-cluster overlay pins one switch")])
def test_a_topology_the_lab_cannot_build_is_refused_before_anything_is_built(tmp_path, args, says):
    run = lab_cli(tmp_path / "lab")

    refused = run("up", *args, check=False)

    assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert not (tmp_path / "lab").exists()
