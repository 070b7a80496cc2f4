"""A compromised agent, or anyone holding a token, tries to act for a node that is not its own
(`[kubernetes] agent_auth = "tokenreview"`): every attempt is refused with a reason, and nothing of
the other node changes.

The controller's REST API over TLS (a CA of its own), the real API server reviewing the tokens, and a
hostile client: node n1's agent token against n2's endpoints, a token forged with another key, an
unsigned one (`alg: none`), the pod's token for another audience, a token of another ServiceAccount
of the agent's namespace, and a token bound to the Node object itself rather than to a pod on it.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agenttokens import AGENT_SA, AgentTokens, agent_tokens, es256  # noqa: F401  (fixture)
from ctlfakes import Clock, RecordingFabric, make_config
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeenv import SERVICEACCOUNTS, kube  # noqa: F401  (fixture)

from controller.agentauth import TokenReviewAuth
from controller.api import Api
from controller.httpd import HttpServer, tls_context
from controller.kube.client import Kube
from controller.kube.tokenreview import TokenReviewer
from controller.service import Service
from controller.store import SqliteStore
from deploy.lab.pki import server_files

N2 = {"mac": "02:00:00:00:01:02", "ip": "198.18.0.12"}
POD = {"container_id": "c-web", "ifname": "eth0", "namespace": "default", "name": "web", "mode": "macvlan"}

Call = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def controller(kube: Kube, agent_tokens: AgentTokens, tmp_path: Path) -> Iterator[tuple[Call, Service]]:
    service = Service(SqliteStore(tmp_path / "store.sqlite"), make_config(), now=Clock(), fabric=RecordingFabric())
    auth = TokenReviewAuth(TokenReviewer(kube, audiences=["underlay"]), now=Clock(), ttl=10,
                           namespace=agent_tokens.namespace, service_account=AGENT_SA)
    files = server_files(tmp_path / "pki", ip="127.0.0.1")
    server = HttpServer(Api(service, auth=auth), "127.0.0.1", 0, tls=tls_context(cert=str(files.cert), key=str(files.key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    trust = ssl.create_default_context(cafile=str(files.ca))

    def call(method: str, path: str, body: object = None, *, token: str) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPSConnection("127.0.0.1", server.server_address[1], context=trust, timeout=10)
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        answer = (response.status, json.loads(response.read()))
        connection.close()
        return answer

    try:
        yield call, service
    finally:
        server.shutdown()


@pytest.fixture
def n2_with_a_pod(controller: tuple[Call, Service], agent_tokens: AgentTokens) -> str:
    """n2 registered by its own agent, with one pod placed; returns n1's agent token."""
    call, service = controller
    agent_tokens.pod("agent-n2", "n2")
    agent_tokens.pod("agent-n1", "n1")
    n2 = agent_tokens.token("agent-n2")
    assert call("PUT", "/v1/nodes/n2", N2, token=n2)[0] == 200
    assert call("POST", "/v1/nodes/n2/pods", POD, token=n2)[0] == 200
    return agent_tokens.token("agent-n1")


def test_an_agent_cannot_act_for_another_node(controller: tuple[Call, Service], n2_with_a_pod: str) -> None:
    call, service = controller
    n1 = n2_with_a_pod
    before = service.placements()
    attempts = [
        ("PUT", "/v1/nodes/n2", {"mac": "02:00:00:00:66:66", "ip": "198.18.0.66"}),
        ("POST", "/v1/nodes/n2/pods", {**POD, "container_id": "c-evil", "name": "evil"}),
        ("PUT", "/v1/nodes/n2/pods", {"pods": []}),  # a full sync that would release n2's pod
        ("DELETE", "/v1/nodes/n2/pods/c-web/eth0", None),
        ("GET", "/v1/nodes/n2/pods", None),
    ]
    for method, path, body in attempts:
        status, answer = call(method, path, body, token=n1)
        assert status == 403, (method, path, answer)
        assert answer["error"].endswith("agent-n1 on node n1 may not act for node n2"), answer
    assert service.placements() == before
    assert call("GET", "/v1/placements", token=n1)[0] == 200  # what any node may read, it still may


def forged(token: str, *, key: ec.EllipticCurvePrivateKey | None) -> str:
    """`token`'s header and claims (node n2's), signed by `key`, or unsigned (`alg: none`)."""
    header, payload, _ = token.split(".")
    if key is None:
        none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        return f"{none}.{payload}."
    return es256(f"{header}.{payload}", key)


def test_tokens_not_issued_to_a_pod_of_the_agent_are_refused(
    controller: tuple[Call, Service], agent_tokens: AgentTokens, kube: Kube, n2_with_a_pod: str
) -> None:
    call, service = controller
    n2_token = agent_tokens.token("agent-n2")
    agent_tokens.service_account("sidecar")
    agent_tokens.pod("sidecar", "n2", service_account="sidecar")
    node_bound = kube.create(SERVICEACCOUNTS.path(namespace=agent_tokens.namespace, name=AGENT_SA, sub="token"), {
        "spec": {"audiences": ["underlay"], "boundObjectRef": {"kind": "Node", "apiVersion": "v1", "name": "n2"}}})
    attacks = {
        "signed with another key": (forged(n2_token, key=ec.generate_private_key(ec.SECP256R1())), 401),
        "unsigned (alg none)": (forged(n2_token, key=None), 401),
        "the pod's token for the Kubernetes API": (agent_tokens.token("agent-n2", audience="kubernetes"), 401),
        "another ServiceAccount's pod on n2": (agent_tokens.token("sidecar", service_account="sidecar"), 403),
        "bound to the Node, not to a pod": (node_bound["status"]["token"], 403),
    }
    before = service.placements()
    for attack, (token, expected) in attacks.items():
        for method, path, body in (("POST", "/v1/nodes/n2/pods", {**POD, "container_id": "c-evil"}),
                                   ("DELETE", "/v1/nodes/n2/pods/c-web/eth0", None)):
            status, answer = call(method, path, body, token=token)
            assert status == expected and answer["error"], (attack, method, answer)
    assert service.placements() == before
    assert call("GET", "/v1/nodes/n2/pods", token=n2_token)[0] == 200  # and n2's own still works


B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=300)
TOKENS = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=2000),  # anything printable
    st.builds(lambda *parts: ".".join(parts), B64, B64, B64),  # shaped like a JWT
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=TOKENS)
def test_fuzzed_tokens_are_refused_never_a_500(controller: tuple[Call, Service], token: str) -> None:
    call, service = controller
    status, answer = call("POST", "/v1/nodes/n2/pods", {**POD, "container_id": "c-fuzz"}, token=token)
    assert status == 401 and answer["error"].startswith(("token refused by the cluster", "missing bearer token")), answer
    assert service.placements() == []
