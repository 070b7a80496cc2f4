"""Build underlay's container images with podman and export them for containerd, once per machine.

`python -m deploy.image.build [--pause] [--underlay]` (both when neither is given) makes the Debian
base first (deploy/image/base.py), builds `localhost/pause:3.10` (deploy/image/pause/) and
`localhost/underlay:dev` (deploy/image/Containerfile, its context made by deploy/image/context.py), and
saves each as an OCI archive in ~/.cache/underlay/image/ (`$UNDERLAY_IMAGE_CACHE` moves it), which
`ctr -n k8s.io images import` takes under the same name. It prints the archives' paths on stdout, one
per line, and its progress on stderr.

podman's layer cache makes a build of unchanged inputs take seconds; an archive is written again only
when its image's ID changed (the ID it was saved from is kept beside it), through a temporary file and
a rename. One build at a time per machine: callers wait on a file lock in the cache directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import buildcache
from deploy.image import base, context
from deploy.image.podman import ImageError, Podman

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE_ENV = "UNDERLAY_IMAGE_CACHE"
BUILD_COMMAND = "python -m deploy.image.build"
MakeContext = Callable[[Path, buildcache.Log], Path]


def _fixed(directory: Path) -> MakeContext:
    return lambda cache, log: directory


@dataclass(frozen=True)
class Image:
    """One image we build: its name, its Containerfile and context, the archive containerd imports."""

    name: str
    containerfile: Path
    context: MakeContext  # (cache directory, log) -> the build context
    archive: str

    @property
    def slug(self) -> str:
        """The name as a file name: pause-3.10."""
        return self.name.rsplit("/", 1)[1].replace(":", "-")


PAUSE = Image("localhost/pause:3.10", HERE / "pause" / "Containerfile", _fixed(HERE / "pause"), "pause-3.10.oci.tar")
UNDERLAY = Image("localhost/underlay:dev", HERE / "Containerfile",
                 lambda cache, log: context.make(REPO, cache=cache, log=log), "underlay-dev.oci.tar")


def cache_dir(*, environ: Mapping[str, str] = os.environ) -> Path:
    return buildcache.cache_dir("image", override=CACHE_ENV, environ=environ)


def ensure(images: Sequence[Image] = (PAUSE, UNDERLAY), *, environ: Mapping[str, str] = os.environ,
           recipe: base.Recipe = base.Recipe(), log: buildcache.Log = print) -> dict[str, Path]:
    """Build `images` (on the base, made first if need be) and export each; image name -> archive."""
    podman = Podman.find(environ=environ)
    cache = cache_dir(environ=environ)
    cache.mkdir(parents=True, exist_ok=True)
    base.ensure(podman, cache=cache, recipe=recipe, log=log)
    archives = {}
    for image in images:
        with buildcache.locked(cache / ".lock", log=log, what="image"):
            archives[image.name] = _build_and_save(podman, image, cache=cache, recipe=recipe, log=log)
    return archives


def _build_and_save(podman: Podman, image: Image, *, cache: Path, recipe: base.Recipe,
                    log: buildcache.Log) -> Path:
    started = time.monotonic()
    built = podman.build(image.containerfile, image.context(cache, log), tag=image.name, log=log,
                         build_log=cache / f"build-{image.slug}.log", build_args={"BASE": recipe.image})
    archive = cache / image.archive
    saved_from = archive.with_name(f"{archive.name}.id")
    if archive.exists() and saved_from.exists() and saved_from.read_text().strip() == built:
        log(f"image: {image.name} {_short(built)} unchanged ({buildcache.elapsed(started)}), {archive}")
        return archive
    podman.save(image.name, archive)
    saved_from.write_text(built + "\n")
    log(f"image: {image.name} {_short(built)} built and saved in {buildcache.elapsed(started)}: "
        f"{archive} ({archive.stat().st_size >> 20} MiB)")
    return archive


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=BUILD_COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--pause", action="store_true", help=f"build {PAUSE.name}")
    parser.add_argument("--underlay", action="store_true", help=f"build {UNDERLAY.name}")
    args = parser.parse_args(argv)
    chosen = [image for image, wanted in ((PAUSE, args.pause), (UNDERLAY, args.underlay)) if wanted]
    try:
        archives = ensure(chosen or (PAUSE, UNDERLAY), log=lambda line: print(line, file=sys.stderr, flush=True))
    except ImageError as error:
        print(f"{BUILD_COMMAND}: {error}", file=sys.stderr)
        return 1
    for archive in archives.values():
        print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
