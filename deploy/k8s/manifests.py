"""deploy/kubernetes as data, and kubectl to apply it: what the manifests' tests and the lab share.

The kustomization's `resources` are the list of what a cluster gets (`kubectl apply -k`), so they are
the list read here too. kubectl is the one built from the same pinned Kubernetes release as the API
server (`python -m deploy.k8s.build kubectl`), not whichever one a machine happens to have: a
client more than one minor version away from the server is outside Kubernetes' skew policy.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.k8s import build

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "kubernetes"
KUBECTL = "kubectl"
KUBECTL_TIMEOUT = 120.0

Manifest = dict[str, Any]


class MissingKubectl(RuntimeError):
    """kubectl is not built; the message names the command that builds it."""


class KubectlFailed(RuntimeError):
    """kubectl exited non-zero; the message carries its command line and what it printed."""


def files(directory: Path = MANIFEST_DIR) -> list[Path]:
    """The kustomization's resources, in its order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [directory / name for name in kustomization["resources"]]


def documents(path: Path) -> list[Manifest]:
    """The objects of one YAML file (empty documents left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects(directory: Path = MANIFEST_DIR) -> Iterator[Manifest]:
    for path in files(directory):
        yield from documents(path)


def find(kind: str, name: str, *, directory: Path = MANIFEST_DIR) -> Manifest:
    """The one object of `kind` called `name`; KeyError naming both when there is none."""
    for obj in objects(directory):
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"no {kind} {name} in {directory}")


def kubectl_path(*, environ: Mapping[str, str] = os.environ) -> Path:
    path = build.binary_path(KUBECTL, environ=environ)
    if not path.exists():
        raise MissingKubectl(f"kubectl not built in {path.parent}: run `{build.BUILD_COMMAND} {KUBECTL}`")
    return path


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster of `kubeconfig`; with `check`, a failure raises KubectlFailed."""
    argv: Sequence[str] = [str(kubectl_path()), f"--kubeconfig={kubeconfig}", *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise KubectlFailed(f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done
