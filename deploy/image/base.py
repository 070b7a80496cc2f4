"""The Debian base every image builds FROM, made here with debootstrap: no registry is needed.

`debootstrap --variant=minbase bookworm` from Debian's mirror gives a root filesystem (1 to 3 minutes
cold on 2 cores, by load); it gets bookworm's updates and security sources, docs and man pages are left
out of later package installs (as Debian's own -slim images do), and it is tarred into the cache
(~/.cache/underlay/image/, `$UNDERLAY_IMAGE_CACHE` moves it) and imported into podman as
`localhost/debian-base:bookworm`. The recipe's key (suite, mirror, variant, what is written into the
tree) is a label on the image and part of the tarball's name: the base is made again only when the
recipe changes, or imported again from the tarball when podman's storage lost it. The tree is made in
a temporary directory and the tarball renamed into place: a reader never sees half a base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy import buildcache
from deploy.image.podman import ImageError, Podman

KEY_LABEL = "org.underlay.base.key"
DEBOOTSTRAP_HINT = "apt-get install debootstrap (Makefile APT_PACKAGES)"
# What Debian's -slim images leave out: dpkg skips these paths in every later install.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
"""
# Never install recommended packages: each image names what it needs.
APT_CONF = 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'


@dataclass(frozen=True)
class Recipe:
    """What the base is made from; its key changes exactly when the result would."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security: str = "http://deb.debian.org/debian-security"
    variant: str = "minbase"

    @property
    def image(self) -> str:
        return f"localhost/debian-base:{self.suite}"

    def sources(self) -> str:
        return (f"deb {self.mirror} {self.suite} main\n"
                f"deb {self.mirror} {self.suite}-updates main\n"
                f"deb {self.security} {self.suite}-security main\n")

    def key(self) -> str:
        recipe = {**asdict(self), "sources": self.sources(), "dpkg": DPKG_EXCLUDES, "apt": APT_CONF}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure(podman: Podman, *, cache: Path, recipe: Recipe = Recipe(), log: buildcache.Log = print) -> str:
    """The base image's ID, making or importing it first when podman lacks this recipe's base."""
    if podman.label(recipe.image, KEY_LABEL) == recipe.key():
        return _image_id(podman, recipe)
    with buildcache.locked(cache / ".lock", log=log, what="image"):
        if podman.label(recipe.image, KEY_LABEL) != recipe.key():  # another caller may have made it
            tarball = cache / f"debian-{recipe.suite}-{recipe.key()}.tar"
            if not tarball.exists():
                bootstrap(recipe, tarball, log=log)
            log(f"image: importing {tarball.name} as {recipe.image}")
            podman.run("import", "--change", f"LABEL {KEY_LABEL}={recipe.key()}", "--change",
                       'CMD ["/bin/bash"]', str(tarball), recipe.image)
    return _image_id(podman, recipe)


def _image_id(podman: Podman, recipe: Recipe) -> str:
    image = podman.image_id(recipe.image)
    if image is None:
        raise ImageError(f"{recipe.image} vanished from podman's storage while in use")
    return image


def bootstrap(recipe: Recipe, tarball: Path, *, log: buildcache.Log) -> None:
    """debootstrap `recipe` into a temporary tree beside `tarball`, finish it, tar it into place."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError(f"debootstrap is not installed (not on PATH): {DEBOOTSTRAP_HINT}")
    started = time.monotonic()
    log(f"image: debootstrap --variant={recipe.variant} {recipe.suite} from {recipe.mirror} "
        f"(1-3 minutes, once per machine)")
    work = Path(tempfile.mkdtemp(dir=tarball.parent, prefix=".base-"))
    try:
        rootfs = work / "rootfs"
        build_log = tarball.parent / "debootstrap.log"
        rc = buildcache.run_logged([debootstrap, f"--variant={recipe.variant}", recipe.suite, str(rootfs),
                                    recipe.mirror], log_file=build_log, log=log, status=_debootstrap_status)
        if rc:
            raise ImageError(f"debootstrap failed (exit {rc}) after {buildcache.elapsed(started)}; "
                             f"last lines of {build_log}:\n{buildcache.tail(build_log)}")
        finish(rootfs, recipe)
        partial = work / "base.tar"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, capture_output=True)
        os.replace(partial, tarball)
    finally:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    log(f"image: made the {recipe.suite} base in {buildcache.elapsed(started)} "
        f"({tarball.stat().st_size >> 20} MiB)")


def finish(rootfs: Path, recipe: Recipe) -> None:
    """What debootstrap leaves for us: package sources with updates and security, slim installs,
    and no package lists or downloaded packages in the image (each build step fetches fresh ones)."""
    (rootfs / "etc/apt/sources.list").write_text(recipe.sources())
    (rootfs / "etc/dpkg/dpkg.cfg.d/underlay-slim").write_text(DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/80underlay-slim").write_text(APT_CONF)
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/log/*.log", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*"):
        for path in rootfs.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for doc in rootfs.glob("usr/share/doc/*/*"):
        if doc.name != "copyright":
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()


def _debootstrap_status(output: str) -> str:
    lines = output.splitlines()
    unpacked = sum(1 for line in lines if line.startswith("I: Unpacking "))
    configured = sum(1 for line in lines if line.startswith("I: Configuring "))
    return f"image: debootstrap still running, {unpacked} packages unpacked, {configured} configured"


def _unmount_under(path: Path) -> None:
    """An interrupted debootstrap can leave /proc or /sys mounted in the tree: unmount them before
    the tree is deleted, so removing it never reaches into the host's /proc or /sys."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
