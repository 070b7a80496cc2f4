"""The build context of localhost/underlay:dev: our sources and a wheelhouse, so the build needs no index.

The image's pip installs only from wheels fetched here, on the host, by the host's pip: whatever index,
proxy or certificate authority the host's pip is set up for applies (this machine's egress presents its
own CA, which a freshly bootstrapped Debian does not trust), and the image build itself reaches no
index. The wheels are chosen for the image's Python (bookworm's 3.11) and glibc, not the host's
(`pip download --only-binary :all: --python-version ... --platform ...`), and kept per machine under a
key of the dependencies and that target: fetched again only when pyproject.toml's dependencies change.

The context is made afresh for each build (hard links to the wheels, a copy of the package sources);
podman compares what is copied by content, so an unchanged checkout reuses every layer.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from deploy import buildcache
from deploy.image.podman import ImageError

IMAGE_PYTHON = "3.11"  # bookworm's python3, which the image runs
IMAGE_GLIBC = 36  # bookworm's glibc 2.36: every manylinux wheel up to it runs there
BUILD_REQUIREMENTS = ("setuptools>=61",)  # pyproject.toml's build-system, installed offline in the image
CONTEXT_TIME = 315532800  # 1980-01-01, the earliest time a zip (a wheel) can hold
SOURCE_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "shim", "shim.json")


def requirements(repo: Path) -> list[str]:
    """The project's runtime dependencies (pyproject.toml) and what building it needs."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    return [*project["project"]["dependencies"], *BUILD_REQUIREMENTS]


def platform_tags(machine: str) -> list[str]:
    """Every manylinux tag a wheel for glibc 2.36 on `machine` may carry, and pure-Python wheels."""
    legacy = ["manylinux1", "manylinux2010", "manylinux2014"] if machine == "x86_64" else ["manylinux2014"]
    return [*(f"{tag}_{machine}" for tag in legacy),
            *(f"manylinux_2_{minor}_{machine}" for minor in range(5, IMAGE_GLIBC + 1)), "any"]


def download_args(reqs: list[str], *, dest: Path, machine: str) -> list[str]:
    """`pip download` of binary wheels of `reqs` for the image's interpreter, whatever the host's is."""
    major_minor = IMAGE_PYTHON.replace(".", "")
    return ["download", "--quiet", "--disable-pip-version-check", "--only-binary", ":all:", "--dest", str(dest),
            "--implementation", "cp", "--python-version", IMAGE_PYTHON,
            "--abi", f"cp{major_minor}", "--abi", "abi3", "--abi", "none",
            *(arg for tag in platform_tags(machine) for arg in ("--platform", tag)), *reqs]


def wheelhouse(repo: Path, *, cache: Path, log: buildcache.Log) -> Path:
    """The directory of wheels for `repo`'s dependencies, fetched once per set of dependencies."""
    reqs, machine = requirements(repo), platform.machine()
    key = hashlib.sha256("\n".join([IMAGE_PYTHON, str(IMAGE_GLIBC), machine, *reqs]).encode()).hexdigest()[:16]
    target = cache / f"wheels-{key}"
    if target.is_dir():
        return target
    log(f"image: fetching wheels for python {IMAGE_PYTHON} ({len(reqs)} requirements) into {target}")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".wheels-") as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", *download_args(reqs, dest=Path(tmp), machine=machine)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise ImageError(f"pip download of the image's wheels failed (exit {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-3000:]}")
        os.rename(tmp, target)
    return target


def make(repo: Path, *, cache: Path, log: buildcache.Log) -> Path:
    """A fresh build context: `wheels/` (the dependencies) and `src/` (pyproject.toml, README.md and the
    packages pyproject.toml names), replacing the previous one."""
    wheels = wheelhouse(repo, cache=cache, log=log)
    context = cache / "context-underlay"
    fresh = Path(tempfile.mkdtemp(dir=cache, prefix=".context-"))
    try:
        (fresh / "wheels").mkdir()
        for wheel in wheels.iterdir():
            os.link(wheel, fresh / "wheels" / wheel.name)
        for name in ("pyproject.toml", "README.md"):
            (fresh / "src").mkdir(exist_ok=True)
            shutil.copy2(repo / name, fresh / "src" / name)
        for package in packages(repo):
            shutil.copytree(repo / package, fresh / "src" / package, ignore=SOURCE_IGNORED)
        _settle_times(fresh)
        shutil.rmtree(context, ignore_errors=True)
        os.rename(fresh, context)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return context


def _settle_times(tree: Path) -> None:
    """One fixed time on every file: a layer's digest then depends on content alone. With the copies'
    own times, a checkout touched back to the same content gave a second cached layer of the same
    content, and podman picked either from build to build, so an unchanged image changed its ID."""
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (CONTEXT_TIME, CONTEXT_TIME), follow_symlinks=False)


def packages(repo: Path) -> list[str]:
    """The top-level packages pyproject.toml's `packages.find` includes (`cni*` -> cni)."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    included = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*") for pattern in included if (repo / pattern.rstrip("*")).is_dir()})
