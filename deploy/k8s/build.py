"""Build the Kubernetes binaries the tests and the lab run against, once per machine.

`python -m deploy.k8s.build [COMPONENT ...]` builds the requested commands of the `tool` block of
deploy/k8s/bin/go.mod (kube-apiserver, kube-controller-manager, kube-scheduler by default; `kubelet`,
`kube-proxy`; the `kube-` prefix may be left out) into `~/.cache/underlay/k8s/<version>/`, the version
being the k8s.io/kubernetes release go.mod pins (`$UNDERLAY_K8S_CACHE` replaces `~/.cache/underlay/k8s`).

A binary already there is not built again. The cold build is long (about 7-10 minutes for the three on
2 cores), so it must happen once per machine even when several test sessions ask at once: callers take
an exclusive file lock in the cache directory and look again after getting it (deploy/buildcache.py),
and the build writes into a temporary directory whose binaries are renamed into place, so a reader
never sees half a file.

The machine's Go is used as it is (`GOTOOLCHAIN=local`: no toolchain download), modules come through
the module proxy (`GOFLAGS=-mod=mod`: the module has no vendor tree). Go 1.27's default JSON library
makes the apiserver serve malformed OpenAPI (kubectl then fails with "failed to download openapi"), so
from 1.27 on the build sets `GOEXPERIMENT=nojsonv2`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import buildcache

MODULE_DIR = Path(__file__).resolve().parent / "bin"
CACHE_ENV = "UNDERLAY_K8S_CACHE"
DEFAULT_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
MIN_GO = (1, 26)
JSONV2_GO = (1, 27)  # the first Go whose encoding/json is v2 by default: needs GOEXPERIMENT=nojsonv2
FALLBACK_GO = Path("/usr/local/go/bin/go")  # where Go's own tarball puts it, often not on root's PATH
BUILD_COMMAND = "python -m deploy.k8s.build"
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

Log = buildcache.Log


class BuildError(RuntimeError):
    """The binaries cannot be built here; the message says what is missing or what failed."""


@dataclass(frozen=True)
class Module:
    """What deploy/k8s/bin/go.mod pins: the Kubernetes release and the commands it can build."""

    version: str
    packages: Mapping[str, str]  # binary name -> import path

    @classmethod
    def read(cls, go_mod: Path = MODULE_DIR / "go.mod") -> Module:
        text = go_mod.read_text()
        found = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
        tools = re.search(r"^tool\s*\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
        if not found or not tools:
            raise BuildError(f"{go_mod}: no k8s.io/kubernetes requirement or no tool block")
        paths = [line.split("//")[0].strip() for line in tools.group(1).splitlines()]
        return cls(found.group(1), {path.rsplit("/", 1)[1]: path for path in paths if path})

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Binary names for `names` (`apiserver` or `kube-apiserver`), refusing what go.mod lacks."""
        resolved = []
        for name in names:
            binary = name if name in self.packages else f"kube-{name}"
            if binary not in self.packages:
                raise BuildError(f"unknown component {name!r}: go.mod builds {', '.join(sorted(self.packages))}")
            resolved.append(binary)
        return list(dict.fromkeys(resolved))


def cache_dir(version: str, *, environ: Mapping[str, str] = os.environ) -> Path:
    return buildcache.cache_dir("k8s", override=CACHE_ENV, environ=environ) / version


def binary_path(name: str, *, environ: Mapping[str, str] = os.environ) -> Path:
    """Where `name` (e.g. kube-apiserver) of the pinned release is, built or not."""
    return cache_dir(Module.read().version, environ=environ) / name


def find_go(*, environ: Mapping[str, str] = os.environ, fallback: Path = FALLBACK_GO) -> str:
    go = shutil.which("go", path=environ.get("PATH", os.defpath)) or (str(fallback) if fallback.exists() else None)
    if go is None:
        raise BuildError(f"no Go toolchain (`go` is not on PATH nor at {fallback}): install Go "
                         f"{MIN_GO[0]}.{MIN_GO[1]} (https://go.dev/dl) to build the Kubernetes binaries")
    return go


def go_version(go: str) -> tuple[int, int]:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False,
                         env={**os.environ, "GOTOOLCHAIN": "local"})
    found = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode or not found:
        raise BuildError(f"{go} env GOVERSION failed: {(out.stderr or out.stdout).strip()}")
    return int(found.group(1)), int(found.group(2))


def build_env(version: tuple[int, int], *, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of `go build`: the machine's own Go, modules through the proxy, and the JSON
    library Kubernetes expects (see the module docstring)."""
    if version < MIN_GO:
        raise BuildError(f"Go {version[0]}.{version[1]} is too old: k8s.io/kubernetes needs Go "
                         f"{MIN_GO[0]}.{MIN_GO[1]} or newer")
    env = {**environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    if version >= JSONV2_GO:
        experiments = [e for e in env.get("GOEXPERIMENT", "").split(",") if e and e != "jsonv2"]
        env["GOEXPERIMENT"] = ",".join([*experiments, "nojsonv2"])
    return env


def ensure(names: Sequence[str] = DEFAULT_COMPONENTS, *, environ: Mapping[str, str] = os.environ,
           module_dir: Path = MODULE_DIR, log: Log = print) -> dict[str, Path]:
    """Build what of `names` is not cached yet; return every binary's path."""
    module = Module.read(module_dir / "go.mod")
    binaries = module.resolve(names)
    target = cache_dir(module.version, environ=environ)
    paths = {name: target / name for name in binaries}
    if all(path.exists() for path in paths.values()):
        return paths
    go = find_go(environ=environ)
    version = go_version(go)
    env = build_env(version, environ=environ)
    target.mkdir(parents=True, exist_ok=True)
    with buildcache.locked(target / ".lock", log=log, what="k8s"):
        missing = [name for name, path in paths.items() if not path.exists()]  # another caller may have built
        if missing:
            label = f"{' '.join(missing)} ({module.version}, go{version[0]}.{version[1]})"
            _build(go, [module.packages[name] for name in missing], module_dir=module_dir, target=target,
                   release=module.version, env=env, label=label, log=log)
    return paths


def _build(go: str, packages: Sequence[str], *, module_dir: Path, target: Path, release: str,
           env: Mapping[str, str], label: str, log: Log) -> None:
    """`go build` into a temporary directory beside `target`, then rename each binary into place.

    `-v` names each package as it compiles: the log counts them for the progress lines and keeps
    the whole output in `target/build.log` for a failure."""
    log(f"k8s: building {label} into {target} (the first build takes about 10 minutes on 2 cores)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as tmp:
        argv = [go, "build", "-v", "-trimpath", f"-ldflags={ldflags(release)}", "-o", tmp + "/", *packages]
        rc = buildcache.run_logged(argv, log_file=target / "build.log", cwd=module_dir, env=env, log=log,
                                   status=_progress)
        if rc != 0:
            failure = buildcache.tail(target / "build.log", keep=lambda line: bool(line) and not _is_package(line))
            raise BuildError(f"go build failed (exit {rc}) after {buildcache.elapsed(started)}; "
                             f"last lines of {target / 'build.log'}:\n{failure}")
        for built in sorted(Path(tmp).iterdir()):
            os.replace(built, target / built.name)
    log(f"k8s: built {label} in {buildcache.elapsed(started)}")


def ldflags(version: str) -> str:
    """Strip symbols (a third of the size) and stamp the release as Kubernetes' own build does, so
    `/version` answers v1.36.3 rather than v0.0.0-master."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return " ".join(["-s", "-w", *(f"-X {package}.{key}={value}" for package in VERSION_PACKAGES
                                   for key, value in stamps.items())])


def _progress(output: str) -> str:
    compiled = sum(1 for line in output.splitlines() if _is_package(line))
    return f"k8s: still building, {compiled} packages compiled"


def _is_package(line: str) -> bool:
    """`go build -v` lines are bare import paths; errors and warnings have spaces or colons."""
    return bool(line) and " " not in line and ":" not in line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=BUILD_COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("components", nargs="*", default=list(DEFAULT_COMPONENTS),
                        help="binaries to build (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        paths = ensure(args.components, log=lambda line: print(line, flush=True))
    except BuildError as error:
        print(f"{BUILD_COMMAND}: {error}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"k8s: {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
