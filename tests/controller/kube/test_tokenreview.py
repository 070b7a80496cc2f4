"""Agents authenticated by the real API server (`[kubernetes] agent_auth = "tokenreview"`), through the
controller's REST API: a pod-bound `underlay-agent` token acts for its pod's node and no other.

The tokens are the TokenRequest API's, bound to Pods on Nodes, exactly what kubelet projects into the
agent's pod; kube-apiserver 1.36 puts the pod's node in the review's `user.extra`
(`authentication.kubernetes.io/node-name`, ServiceAccountTokenPodNodeInfo), which the first test
checks on the apiserver itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agenttokens import AGENT_SA, AgentTokens, agent_tokens  # noqa: F401  (fixture)
from ctlfakes import Clock
from test_rest_api import N1, Client

from controller.agentauth import NODE_NAME, POD_NAME, TokenReviewAuth
from controller.api import Api
from controller.httpd import HttpServer
from controller.kube.client import Kube
from controller.kube.tokenreview import TokenReviewer
from controller.service import Service

ROLE = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "controller-rbac.yaml"


@pytest.fixture
def auth(kube: Kube, agent_tokens: AgentTokens, clock: Clock) -> TokenReviewAuth:
    return TokenReviewAuth(TokenReviewer(kube, audiences=["underlay"]), now=clock, ttl=10,
                           namespace=agent_tokens.namespace, service_account=AGENT_SA)


@pytest.fixture
def call(service: Service, auth: TokenReviewAuth) -> Iterator[Callable[..., Any]]:
    server = HttpServer(Api(service, auth=auth), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Client(server.server_address[1])
    finally:
        server.shutdown()


def test_the_apiserver_names_the_bound_pods_node(kube: Kube, agent_tokens: AgentTokens) -> None:
    agent_tokens.pod("agent-a", "n1")
    status = TokenReviewer(kube, audiences=["underlay"])(agent_tokens.token("agent-a"))
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{agent_tokens.namespace}:{AGENT_SA}"
    assert status["user"]["extra"][NODE_NAME] == ["n1"] and status["user"]["extra"][POD_NAME] == ["agent-a"]


def test_a_token_for_node_a_works_for_a_and_is_refused_for_b(call: Client, agent_tokens: AgentTokens) -> None:
    agent_tokens.pod("agent-a", "n1")
    token = agent_tokens.token("agent-a")
    status, body, _ = call("PUT", "/v1/nodes/n1", N1, token=token)
    assert status == 200, body
    assert call("GET", "/v1/nodes/n1/pods", token=token)[:2] == (200, {"pods": [], "epoch": body["epoch"]})
    status, body, _ = call("GET", "/v1/nodes/n2/pods", token=token)
    assert status == 403
    assert body["error"] == (f"token of pod {agent_tokens.namespace}/agent-a on node n1 may not act for node n2")
    status, body, _ = call("PUT", "/v1/nodes/n2", {"mac": "02:00:00:00:01:02", "ip": "198.18.0.12"}, token=token)
    assert status == 403 and "may not act for node n2" in body["error"]


def test_refused_tokens(call: Client, agent_tokens: AgentTokens, auth: TokenReviewAuth) -> None:
    agent_tokens.pod("agent-a", "n1")
    agent_tokens.service_account("other")
    agent_tokens.pod("other-a", "n1", service_account="other")
    cases = {
        "another audience": (agent_tokens.token("agent-a", audience="kubernetes"), 401, "audiences"),
        "another ServiceAccount": (agent_tokens.token("other-a", service_account="other"), 403,
                                   f"only system:serviceaccount:{agent_tokens.namespace}:{AGENT_SA} speaks"),
        "garbage": ("not-a-token", 401, "token refused by the cluster: invalid bearer token"),
        "none": (None, 401, "missing bearer token"),
    }
    for what, (token, expected, why) in cases.items():
        status, body, _ = call("GET", "/v1/nodes/n1/pods", token=token)
        assert (status, why in body["error"]) == (expected, True), (what, body)
    assert len(auth.cache) == 1  # only the other ServiceAccount's genuine token: its identity, still refused


def test_an_expired_token_is_refused(call: Client, agent_tokens: AgentTokens) -> None:
    agent_tokens.pod("agent-a", "n1")
    token = agent_tokens.token("agent-a")
    now = int(time.time())
    assert call("GET", "/v1/nodes/n1/pods", token=agent_tokens.resigned(token, iat=now - 60))[0] in (200, 404), \
        "a re-signed token with live claims must pass, or the expired one below proves nothing"
    expired = agent_tokens.resigned(token, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    status, body, _ = call("GET", "/v1/nodes/n1/pods", token=expired)
    assert status == 401 and "expired" in body["error"], body


def test_a_token_whose_pod_was_deleted_is_refused_once_the_cache_lets_go(
    call: Client, agent_tokens: AgentTokens, auth: TokenReviewAuth, clock: Clock
) -> None:
    agent_tokens.pod("agent-a", "n1")
    token = agent_tokens.token("agent-a")
    assert call("GET", "/v1/nodes/n1/pods", token=token)[0] in (200, 404)
    agent_tokens.delete_pod("agent-a")
    assert call("GET", "/v1/nodes/n1/pods", token=token)[0] in (200, 404)  # cached: no review asked
    assert auth.reviews == 1
    deadline = time.monotonic() + 30  # the apiserver caches a token's review for 10 s itself
    while True:
        clock.advance(10)  # past our cache's entry every time
        answer = call("GET", "/v1/nodes/n1/pods", token=token)
        if answer[0] == 401:
            break
        assert time.monotonic() < deadline, f"still accepted after the pod was deleted: {answer[:2]}"
        time.sleep(0.2)
    assert "service account token has been invalidated" in answer[1]["error"], answer[1]


def test_the_cache_saves_the_hot_path_its_reviews(call: Client, agent_tokens: AgentTokens, auth: TokenReviewAuth) -> None:
    agent_tokens.pod("agent-a", "n1")
    token = agent_tokens.token("agent-a")
    for _ in range(20):
        assert call("GET", "/v1/nodes/n1/pods", token=token)[0] in (200, 404)
    assert auth.reviews == 1


def test_the_controller_role_may_review_tokens(
    kube_as: Callable[[list[dict[str, Any]]], Path], agent_tokens: AgentTokens
) -> None:
    """deploy/kubernetes/controller-rbac.yaml is enough for the reviews (and nothing else is needed)."""
    agent_tokens.pod("agent-a", "n1")
    as_controller = Kube.connect(kubeconfig=str(kube_as(yaml.safe_load(ROLE.read_text())["rules"])))
    try:
        status = TokenReviewer(as_controller, audiences=["underlay"])(agent_tokens.token("agent-a"))
    finally:
        as_controller.close()
    assert status["authenticated"] is True and status["user"]["extra"][NODE_NAME] == ["n1"]
