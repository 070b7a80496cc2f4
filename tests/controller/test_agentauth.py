"""controller/agentauth.py without an API server: what a review means, the cache's rules, static tokens.

The reviews here are the statuses kube-apiserver 1.36 answers (tests/controller/kube/test_tokenreview.py
asks the real one); `review` is the injected I/O, counted so the cache's hits and misses show.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from ctlfakes import Clock

from controller.agentauth import (NODE_NAME, POD_NAME, AgentIdentity, NotAllowed, ReviewCache, StaticTokens,
                                  TokenReviewAuth, Unauthenticated, identity, token_expiry)
from controller.errors import TemporaryError

AGENT = "system:serviceaccount:underlay-system:underlay-agent"


def jwt(exp: float | None, *, salt: str = "") -> str:
    claims = {"sub": AGENT, **({"exp": exp} if exp is not None else {}), "salt": salt}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NiJ9.{body}.c2ln"


def accepted(node: str = "na", *, user: str = AGENT, pod: str | None = "agent-a") -> dict[str, Any]:
    extra = {NODE_NAME: [node], **({POD_NAME: [pod]} if pod else {})}
    return {"authenticated": True, "user": {"username": user, "extra": extra}, "audiences": ["underlay"]}


class Reviews:
    """The review function: answers from a table by token, counting calls."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any] | Exception] = {}
        self.calls = 0

    def __call__(self, token: str) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.get(token, {"user": {}, "error": "invalid bearer token"})
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def reviews() -> Reviews:
    return Reviews()


@pytest.fixture
def auth(reviews: Reviews, clock: Clock) -> TokenReviewAuth:
    return TokenReviewAuth(reviews, now=clock, namespace="underlay-system", service_account="underlay-agent", ttl=10)


@pytest.fixture
def token(reviews: Reviews, clock: Clock) -> str:
    """An hour-long token the cluster accepts for node na."""
    token = jwt(clock() + 3600)
    reviews.answers[token] = accepted("na")
    return token


def test_a_review_names_the_user_pod_and_node():
    assert identity(accepted("na")) == AgentIdentity(AGENT, "agent-a", "na")
    with pytest.raises(Unauthenticated, match="token refused by the cluster: invalid bearer token"):
        identity({"user": {}, "error": "invalid bearer token"})
    with pytest.raises(Unauthenticated, match="not authenticated"):
        identity({"authenticated": "yes"})  # only a JSON true is a yes
    odd = accepted()
    odd["user"]["extra"][NODE_NAME] = ["na", "nb"]  # two node claims: none
    assert identity(odd).node is None


def test_a_token_acts_for_its_own_node_only(auth, token):
    auth.check(token, node="na")
    auth.check(token, node=None)  # "any node": its own
    with pytest.raises(NotAllowed, match="pod underlay-system/agent-a on node na may not act for node nb") as refused:
        auth.check(token, node="nb")
    assert refused.value.status == 403


@pytest.mark.parametrize(("answer", "why"), [
    (accepted(user="system:serviceaccount:default:default"), "token of system:serviceaccount:default:default: only "),
    (accepted(user="system:serviceaccount:other:underlay-agent"), "only system:serviceaccount:underlay-system:underlay-agent"),
    (accepted(pod=None), "is not bound to a pod on a node"),
])  # fmt: skip
def test_another_service_account_or_an_unbound_token_is_forbidden(auth, reviews, clock, answer, why):
    token = jwt(clock() + 3600)
    reviews.answers[token] = answer
    with pytest.raises(NotAllowed, match=why):
        auth.check(token, node="na")


def test_a_missing_or_unknown_token_is_unauthenticated_and_asked_every_time(auth, reviews, clock):
    with pytest.raises(Unauthenticated, match="missing bearer token"):
        auth.check("", node="na")
    assert reviews.calls == 0
    for _ in range(3):
        with pytest.raises(Unauthenticated) as refused:
            auth.check(jwt(clock() + 3600), node="na")
        assert refused.value.status == 401
    assert reviews.calls == 3 and len(auth.cache) == 0  # a refusal is never remembered


def test_an_accepted_token_is_reused_for_the_ttl_then_asked_again(auth, reviews, clock, token):
    for _ in range(5):
        auth.check(token, node="na")
    assert reviews.calls == 1
    clock.advance(10)
    reviews.answers[token] = {"user": {}, "error": "pod deleted"}  # the cluster changed its mind
    with pytest.raises(Unauthenticated, match="pod deleted"):
        auth.check(token, node="na")
    assert reviews.calls == 2


def test_the_cache_never_outlives_the_token(auth, reviews, clock):
    token = jwt(clock() + 8)  # expires in 8 s: cached until 5 s before that
    reviews.answers[token] = accepted("na")
    auth.check(token, node="na")
    clock.advance(2.9)
    auth.check(token, node="na")
    assert reviews.calls == 1
    clock.advance(0.2)
    auth.check(token, node="na")
    assert reviews.calls == 2
    opaque = "not-a-jwt"  # no expiry to bound it by: not cached
    reviews.answers[opaque] = accepted("na")
    auth.check(opaque, node="na")
    auth.check(opaque, node="na")
    assert reviews.calls == 4


def test_a_cached_identity_is_still_checked_against_the_node(auth, reviews, token):
    auth.check(token, node="na")
    with pytest.raises(NotAllowed):
        auth.check(token, node="nb")
    assert reviews.calls == 1


def test_a_token_like_a_cached_one_is_not_served_from_the_cache(auth, clock, token):
    auth.check(token, node="na")
    for forged in (token[:-1], token + "x", token.upper(), jwt(clock() + 3600, salt="x")):
        with pytest.raises(Unauthenticated):
            auth.check(forged, node="na")


def test_the_cache_is_bounded_least_recently_used_first(clock):
    cache = ReviewCache(size=3)
    agent = AgentIdentity(AGENT, "p", "na")
    for name in "abcd":
        cache.put(name, agent, until=clock() + 10)
        if name == "c":
            assert cache.get("a", now=clock()) == agent  # a is used: b is the oldest now
    assert len(cache) == 3
    assert cache.get("b", now=clock()) is None and cache.get("a", now=clock()) == agent


def test_an_apiserver_that_cannot_answer_is_temporary_not_a_refusal(auth, reviews, clock):
    token = jwt(clock() + 3600)
    reviews.answers[token] = TemporaryError("kubernetes: connection refused", delay=1)
    with pytest.raises(TemporaryError):
        auth.check(token, node="na")


def test_token_expiry_reads_the_jwt_exp_only():
    assert token_expiry(jwt(1234.0)) == 1234.0
    assert token_expiry(jwt(None)) is None
    for junk in ("", "a.b", "a.!!!.c", "a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c",
                 "a." + base64.urlsafe_b64encode(b'{"exp": true}').decode() + ".c"):
        assert token_expiry(junk) is None


def test_static_tokens_are_per_node():
    tokens = StaticTokens({"n1": "one", "n2": "two"})
    tokens.check("one", node="n1")
    tokens.check("two", node=None)
    for token, node in (("two", "n1"), ("", "n1"), ("one", "n3"), ("three", None)):
        with pytest.raises(Unauthenticated, match="missing or invalid bearer token"):
            tokens.check(token, node=node)
