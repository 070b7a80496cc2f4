"""The images, built once per machine (deploy/image/build.py): the first session pays the cold build
(debootstrap and two podman builds, ~5 minutes here), later ones find the base and the layers cached and
take seconds. A machine without podman or debootstrap fails these tests naming what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.image import build
from deploy.image.podman import ImageError, Podman


@pytest.fixture(scope="session")
def podman() -> Podman:
    try:
        return Podman.find()
    except ImageError as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.fixture(scope="session")
def archives(podman: Podman) -> dict[str, Path]:
    """Image name -> OCI archive, both images built (or found built) and saved."""
    try:
        return build.ensure(log=lambda line: print(line, flush=True))
    except ImageError as failure:
        pytest.fail(f"{build.BUILD_COMMAND}: {failure}", pytrace=False)
