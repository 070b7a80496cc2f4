"""podman as the image build drives it: the project's own containers.conf, errors that name the command.

The machines we build on may lack systemd (this lab VM has none, cgroup v1 with a hybrid layout crun
refuses, and no CAP_SYS_RESOURCE): deploy/image/containers.conf sets the cgroupfs manager, file events,
runc and modest rlimits, and `CONTAINERS_CONF` points podman at it alone, so the host's containers.conf
is neither read nor needed. Build steps use the host's network as it is (`--network host`: apt needs
it, and no bridge or NAT rule is made on a shared machine); nothing is ever pulled (`--pull never`):
every image comes from our own base.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import buildcache

CONF = Path(__file__).resolve().with_name("containers.conf")
STEP = re.compile(r"^(?:\[(\d+/\d+)\] )?STEP (\d+/\d+):", re.MULTILINE)
INSTALL_HINT = "apt-get install podman (Makefile APT_PACKAGES)"


class ImageError(RuntimeError):
    """An image cannot be built here; the message says what is missing or which command failed."""


@dataclass(frozen=True)
class Podman:
    """One podman executable with our configuration."""

    executable: str

    @classmethod
    def find(cls, *, environ: Mapping[str, str] = os.environ) -> Podman:
        found = shutil.which("podman", path=environ.get("PATH", os.defpath))
        if found is None:
            raise ImageError(f"podman is not installed (not on PATH): {INSTALL_HINT}")
        return cls(found)

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(CONF)}

    def argv(self, *args: str) -> list[str]:
        return [self.executable, *args]

    def run(self, *args: str, timeout: float | None = None) -> str:
        """`podman ARGS`; its stdout, or ImageError quoting its stderr."""
        done = subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode:
            raise ImageError(f"podman {' '.join(args)} failed (exit {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def image_id(self, name: str) -> str | None:
        """The full ID of image `name`, None when there is no such image."""
        if not self._exists(name):
            return None
        return self.run("image", "inspect", "--format", "{{.Id}}", name).strip()

    def label(self, name: str, key: str) -> str | None:
        """Label `key` of image `name`; None when the image or the label is absent."""
        if not self._exists(name):
            return None
        value = self.run("image", "inspect", "--format", f'{{{{index .Labels "{key}"}}}}', name).strip()
        return None if value in ("", "<no value>") else value

    def _exists(self, name: str) -> bool:
        return subprocess.run(self.argv("image", "exists", name), env=self.env(), check=False).returncode == 0

    def build(self, containerfile: Path, context: Path, *, tag: str, build_log: Path, log: buildcache.Log,
              build_args: Mapping[str, str] | None = None) -> str:
        """`podman build` of `containerfile`, tagged `tag`; the new image's ID. Cached layers make a
        repeated build of unchanged inputs take seconds; the step reached is logged while it runs."""
        args = ["build", "--network=host", "--pull=never", "--layers", "-f", str(containerfile), "-t", tag,
                *(f"--build-arg={key}={value}" for key, value in (build_args or {}).items()), str(context)]
        rc = buildcache.run_logged(self.argv(*args), log_file=build_log, env=self.env(), log=log,
                                   status=lambda output: f"image: building {tag}, {_last_step(output)}")
        if rc:
            raise ImageError(f"podman build of {tag} failed (exit {rc}); last lines of {build_log}:\n"
                             f"{buildcache.tail(build_log)}")
        image = self.image_id(tag)
        if image is None:
            raise ImageError(f"podman build of {tag} succeeded but there is no image {tag}")
        return image

    def save(self, name: str, archive: Path) -> None:
        """`name` as an OCI archive at `archive`, written beside it and renamed: never half a file."""
        partial = archive.with_name(f".{archive.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            self.run("save", "--format", "oci-archive", "-o", str(partial), name)
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)

    def runs(self, image: str, *command: str, options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """`podman run --rm --network none [options] image command`, however it ends."""
        return subprocess.run(self.argv("run", "--rm", "--network", "none", *options, image, *command),
                              env=self.env(), capture_output=True, text=True, check=False)


def _last_step(output: str) -> str:
    """`stage 1/2 step 3/6` from podman's last `[1/2] STEP 3/6: RUN ...` line."""
    steps = STEP.findall(output)
    if not steps:
        return "starting"
    stage, step = steps[-1]
    return f"stage {stage} step {step}" if stage else f"step {step}"
