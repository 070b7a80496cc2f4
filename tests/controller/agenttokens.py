"""Agents' ServiceAccount tokens on the session's real API server, made as kubelet gets them.

`agent_tokens` (a fixture) gives an `AgentTokens` in a fresh namespace holding the `underlay-agent`
ServiceAccount: `pod(name, node)` creates a Pod bound to a Node (nothing runs it: the Node object
and `spec.nodeName` are all a bound token needs), `token(pod)` asks the TokenRequest API for a token
bound to that pod (what a projected volume holds), `delete_pod` deletes it for good (grace 0).
`resigned(token, **claims)` re-signs a token's claims with the cluster's own service-account key:
an expired token, as an attacker who kept an old one would replay it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from kubeenv import SERVICEACCOUNTS, ensure_node

from controller.kube.client import NAMESPACES, PODS, Kube, Missing

AGENT_SA = "underlay-agent"


class AgentTokens:
    def __init__(self, kube: Kube, namespace: str, *, signing_key: Path) -> None:
        self.kube, self.namespace, self.signing_key = kube, namespace, signing_key
        self.uids: dict[str, str] = {}

    def service_account(self, name: str) -> None:
        self.kube.create(SERVICEACCOUNTS.path(namespace=self.namespace), {"metadata": {"name": name}})

    def pod(self, name: str, node: str, *, service_account: str = AGENT_SA) -> str:
        ensure_node(self.kube, node)
        pod = self.kube.create(PODS.path(namespace=self.namespace), {
            "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": service_account, "automountServiceAccountToken": False,
                     "containers": [{"name": "agent", "image": "localhost/underlay:dev"}]}})  # fmt: skip
        self.uids[name] = pod["metadata"]["uid"]
        return self.uids[name]

    def token(self, pod: str, *, audience: str = "underlay", service_account: str = AGENT_SA, seconds: int = 3600) -> str:
        """A token bound to `pod` (its node claim comes with it), as kubelet's projected volume has."""
        bound = {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": self.uids[pod]}
        path = SERVICEACCOUNTS.path(namespace=self.namespace, name=service_account, sub="token")
        answer = self.kube.create(path, {"spec": {"audiences": [audience], "expirationSeconds": seconds,
                                                  "boundObjectRef": bound}})  # fmt: skip
        return str(answer["status"]["token"])

    def delete_pod(self, name: str) -> None:
        self.kube.request("DELETE", PODS.path(namespace=self.namespace, name=name),
                          body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})  # fmt: skip

    def resigned(self, token: str, **claims: Any) -> str:
        """`token` with `claims` changed, signed again with the cluster's service-account key (ES256)."""
        header, payload, _ = token.split(".")
        body = {**json.loads(_unb64(payload)), **claims}
        key = serialization.load_pem_private_key(self.signing_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return es256(f"{header}.{_b64(json.dumps(body).encode())}", key)


def es256(signing_input: str, key: ec.EllipticCurvePrivateKey) -> str:
    """A JWS compact token: `header.payload` and its ES256 signature (r || s, not DER)."""
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def agent_tokens(kube: Kube, k8s: Any) -> Iterator[AgentTokens]:
    namespace = f"ua-{secrets.token_hex(3)}"
    kube.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
    tokens = AgentTokens(kube, namespace, signing_key=k8s.plane.directory / "sa.key")
    tokens.service_account(AGENT_SA)
    yield tokens
    for name in tokens.uids:  # at once: no kubelet would ever finish a graceful deletion
        try:
            tokens.delete_pod(name)
        except Missing:
            pass
    kube.delete(NAMESPACES.path(name=namespace))
