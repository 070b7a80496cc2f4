"""deploy/image/base.py and podman.py without podman: the base's cache key, what is done to the tree
debootstrap made, progress lines, and the errors of a machine that lacks the tools."""

from __future__ import annotations

import dataclasses

import pytest

from deploy.image import base, podman
from deploy.image.podman import ImageError, Podman


def test_the_base_is_made_again_exactly_when_its_recipe_changes():
    recipe = base.Recipe()
    assert recipe.image == "localhost/debian-base:bookworm"
    assert recipe.key() == base.Recipe().key()
    for change in ({"mirror": "http://mirror.example/debian"}, {"suite": "trixie"}, {"variant": "buildd"}):
        assert dataclasses.replace(recipe, **change).key() != recipe.key(), change


def test_the_finished_tree_has_every_bookworm_source_slim_installs_and_no_package_lists(tmp_path):
    for directory in ("etc/apt/apt.conf.d", "etc/dpkg/dpkg.cfg.d", "var/lib/apt/lists", "var/cache/apt/archives",
                      "usr/share/doc/bash", "usr/share/man/man1"):
        (tmp_path / directory).mkdir(parents=True)
    for leftover in ("var/lib/apt/lists/deb.debian.org_Packages", "var/cache/apt/pkgcache.bin",
                     "var/cache/apt/archives/bash.deb", "usr/share/doc/bash/README", "usr/share/man/man1/bash.1"):
        (tmp_path / leftover).write_text("x")
    (tmp_path / "usr/share/doc/bash/copyright").write_text("GPL")

    base.finish(tmp_path, base.Recipe())

    assert (tmp_path / "etc/apt/sources.list").read_text().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main"]
    assert "path-exclude /usr/share/doc/*" in (tmp_path / "etc/dpkg/dpkg.cfg.d/underlay-slim").read_text()
    assert 'Install-Recommends "false"' in (tmp_path / "etc/apt/apt.conf.d/80underlay-slim").read_text()
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == ["etc/apt/apt.conf.d/80underlay-slim", "etc/apt/sources.list", "etc/dpkg/dpkg.cfg.d/underlay-slim",
                    "usr/share/doc/bash/copyright"]


def test_progress_lines_say_how_far_debootstrap_and_podman_build_got():
    output = "I: Retrieving bash\nI: Unpacking bash...\nI: Unpacking dash...\nI: Configuring bash...\n"
    assert base._debootstrap_status(output).endswith("2 packages unpacked, 1 configured")
    assert podman._last_step("[1/2] STEP 1/4: FROM x\n[2/2] STEP 3/4: RUN make\nbuilding\n") == "stage 2/2 step 3/4"
    assert podman._last_step("STEP 1/2: FROM x\nSTEP 2/2: COPY a b\n") == "step 2/2"
    assert podman._last_step("") == "starting"


def test_no_podman_names_the_package(tmp_path):
    with pytest.raises(ImageError, match=r"podman is not installed \(not on PATH\): apt-get install podman"):
        Podman.find(environ={"PATH": str(tmp_path)})


def test_no_debootstrap_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageError, match=r"debootstrap is not installed \(not on PATH\): apt-get install debootstrap"):
        base.bootstrap(base.Recipe(), tmp_path / "base.tar", log=print)
    assert list(tmp_path.iterdir()) == []
