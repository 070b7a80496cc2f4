"""Install underlay's CustomResourceDefinitions (deploy/kubernetes/crds) into a cluster and wait until
the API server serves them: what the lab and the tests do before they create IPPools.

A CRD that exists is replaced (the files are the truth), so a long-lived lab picks up schema changes.
"Established" is the API server's word for "the new resource is served": creating an object before
it answers 404.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

CRD_DIR = Path(__file__).resolve().parents[1] / "kubernetes" / "crds"


def manifests(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the YAML files of `directory`, in file order."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text())
                  if doc and doc.get("kind") == "CustomResourceDefinition"]
    return found


def install(api: client.ApiClient, *, directory: Path = CRD_DIR, timeout: float = 30) -> list[str]:
    """Create or replace each CRD, then wait until all are Established; return their names."""
    extensions: Any = client.ApiextensionsV1Api(api)  # takes the manifests as plain dicts
    names = []
    for crd in manifests(directory):
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = extensions.read_custom_resource_definition(name)
        except client.ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition(crd)
            continue
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, crd)
    deadline = time.monotonic() + timeout
    for name in names:
        while not established(extensions.read_custom_resource_definition(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout:.0f} s")
            time.sleep(0.05)
    return names


def established(crd: client.V1CustomResourceDefinition) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)
