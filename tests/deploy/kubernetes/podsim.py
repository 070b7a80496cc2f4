"""A pod of deploy/kubernetes laid out in a directory as the kubelet would lay it out: what its
containers would see, so a test can run our own config loaders on exactly the Deployment's and
DaemonSet's arguments and mounted files (no kubelet, no cluster: pure file work).

Every volume mount becomes `root/<mountPath>` holding the volume's content: a ConfigMap's keys (from
the manifests, or given), a Secret's keys (given), a projected token, an empty directory for a
hostPath or emptyDir. Arguments get Kubernetes' `$(VAR)` expansion from the container's environment
(downward API values given by the test) and then every absolute path under a mount rewritten to its
place under `root`, as are the config files' contents. A path the configuration names outside every
mount is left as it is, and so fails to open: that is the drift these tests catch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.k8s import manifests

VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one stays."""
    return VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class Container:
    spec: dict[str, Any]
    pod: dict[str, Any]
    root: Path
    env: dict[str, str]

    @property
    def mounts(self) -> dict[str, dict[str, Any]]:
        """mountPath -> the volume mounted there."""
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        return {m["mountPath"]: {**volumes[m["name"]], "mount": m} for m in self.spec.get("volumeMounts", ())}

    def local(self, path: str) -> str:
        """Where a container path is in `root`, if a mount holds it."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return str(self.root) + path
        return path

    def rewrite(self, text: str) -> str:
        """Every path under a mount, quoted or after `=`, moved under `root` (in one pass)."""
        mounts = "|".join(re.escape(m.rstrip("/")) for m in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf'(["=])((?:{mounts})(?=["/\s]|$))', lambda m: m.group(1) + str(self.root) + m.group(2), text)

    def argv(self) -> list[str]:
        return [self.rewrite(expand(arg, self.env)) for arg in self.spec.get("args", [])]


def lay_out(workload: dict[str, Any], container: str, root: Path, *, downward: Mapping[str, str],
            secrets: Mapping[str, Mapping[str, bytes]] = {}, config_maps: Mapping[str, Mapping[str, str]] = {},
            service_env: Mapping[str, str] = {}, init: bool = False) -> Container:
    """The container `container` of a Deployment/DaemonSet, its volumes written under `root`.
    `downward` gives each fieldRef's value by its fieldPath; `service_env` what Kubernetes puts in a
    pod's environment for the Services of its namespace."""
    pod = workload["spec"]["template"]["spec"]
    spec = next(c for c in pod["initContainers" if init else "containers"] if c["name"] == container)
    env = dict(service_env)
    for var in spec.get("env", ()):
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            env[var["name"]] = downward[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = _config_map(ref["name"], config_maps)[ref["key"]]
        else:
            env[var["name"]] = var["value"]
    made = Container(spec, pod, root, env)
    for path, volume in made.mounts.items():
        _write_volume(root / path.lstrip("/"), volume, rewrite=made.rewrite, secrets=secrets, config_maps=config_maps)
    return made


def _config_map(name: str, given: Mapping[str, Mapping[str, str]]) -> Mapping[str, str]:
    if name in given:
        return given[name]
    data: Mapping[str, str] = manifests.find("ConfigMap", name)["data"]
    return data


def _write_volume(target: Path, volume: dict[str, Any], *, rewrite: Callable[[str], str],
                  secrets: Mapping[str, Mapping[str, bytes]], config_maps: Mapping[str, Mapping[str, str]]) -> None:
    sub = volume["mount"].get("subPath")
    if "configMap" in volume:
        content = {k: rewrite(v).encode() for k, v in _config_map(volume["configMap"]["name"], config_maps).items()}
    elif "secret" in volume:
        content = dict(secrets[volume["secret"]["secretName"]])
    elif "projected" in volume:
        content = {s["serviceAccountToken"]["path"]: b"a-projected-token" for s in volume["projected"]["sources"]}
    else:  # hostPath, emptyDir
        target.mkdir(parents=True, exist_ok=True)
        return
    if sub is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content[sub])
        return
    target.mkdir(parents=True, exist_ok=True)
    for key, value in content.items():
        (target / key).write_bytes(value)
