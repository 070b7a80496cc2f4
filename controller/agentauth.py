"""Who an agent is: its bearer token checked against a static table, or by Kubernetes.

The REST API (controller/api.py) asks an `Authenticator` whether a token may act for a node (or,
`node=None`, for any node) and maps a refusal to its status: `Unauthenticated` (401: no token, a
token nobody issued, expired, of another audience, whose pod is gone) or `NotAllowed` (403: a
genuine token that may not do this: another ServiceAccount's, or one bound to another node).

- `StaticTokens`: one secret per node from the controller's config (the standalone lab), compared
  in constant time, so a wrong token, or another node's, learns nothing.
- `TokenReviewAuth` (`[kubernetes] agent_auth = "tokenreview"`): the agent sends its pod's projected
  ServiceAccount token (audience `underlay`); a TokenReview says whose it is, and the apiserver's
  bound-token claims say which pod and which node (`authentication.kubernetes.io/node-name` in the
  user's extra, kube-apiserver >= 1.30, ServiceAccountTokenPodNodeInfo). The token must be the agent
  ServiceAccount's, bound to a pod, and that pod's node must be the node of the request: a
  compromised agent acts for its own node only.

Positive reviews are cached so the CNI hot path costs no TokenReview per pod: keyed by the SHA-256
of the whole token (a cache hit is the same token), for `ttl` seconds but never past the token's own
expiry (read from the JWT's `exp`, unverified: it only shortens the cache; a token without one is
not cached), in a bounded LRU. Refusals are never cached: each is asked again, so nothing a refusal
leaves behind can let a token through. What is cached is the identity, and the node is checked on
every request against it. The review itself (I/O) is injected: `controller.kube.tokenreview`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

NODE_NAME = "authentication.kubernetes.io/node-name"
POD_NAME = "authentication.kubernetes.io/pod-name"
AUDIENCE = "underlay"
CACHE_TTL = 10.0  # seconds a positive review is reused
CACHE_SIZE = 4096  # tokens remembered: a node's agent has one at a time (two around a rotation)
EXPIRY_MARGIN = 5.0  # seconds before its expiry a token stops being served from the cache


class Refused(Exception):
    status = 401


class Unauthenticated(Refused):
    """No token, or one that does not prove who sent it."""


class NotAllowed(Refused):
    """A genuine token that may not do this."""

    status = 403


class Authenticator(Protocol):
    def check(self, token: str, *, node: str | None) -> None:
        """Return if `token` may act for `node` (None: for some node); raise a `Refused` otherwise.
        May raise controller.errors.TemporaryError when it cannot tell now."""


class StaticTokens:
    """The config's `[nodes.<n>] token`s."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = {node: token.encode() for node, token in tokens.items()}
        self._decoy = secrets.token_bytes(32)  # compared against when a node has no token

    def check(self, token: str, *, node: str | None) -> None:
        given = token.encode()
        if node is not None:
            expected = self.tokens.get(node)
            ok = hmac.compare_digest(given, expected or self._decoy) and expected is not None
        else:
            ok = any([hmac.compare_digest(given, expected) for expected in self.tokens.values()])
        if not given or not ok:
            raise Unauthenticated("missing or invalid bearer token" + (f" for node {node}" if node else ""))


class OperatorTokens:
    """The config's `[api] operator_tokens`: who may read every GET route (underlayctl)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = [token.encode() for token in tokens if token]

    def holds(self, token: str) -> bool:
        """Compared with every one, in constant time: a guess learns nothing from the timing."""
        given = token.encode()
        return bool(given) and any([hmac.compare_digest(given, expected) for expected in self.tokens])


@dataclass(frozen=True)
class AgentIdentity:
    """What a TokenReview says of a token: its user and, for a pod-bound one, its pod and node."""

    username: str
    pod: str | None
    node: str | None


def identity(status: Mapping[str, Any]) -> AgentIdentity:
    """The identity in a TokenReview's status, or Unauthenticated with the apiserver's reason."""
    if status.get("authenticated") is not True:
        raise Unauthenticated(f"token refused by the cluster: {status.get('error') or 'not authenticated'}")
    user = status.get("user") or {}
    extra = user.get("extra") or {}

    def one(key: str) -> str | None:
        values = extra.get(key)
        if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
            return None
        return values[0] or None

    return AgentIdentity(str(user.get("username") or ""), one(POD_NAME), one(NODE_NAME))


def authorize(agent: AgentIdentity, *, node: str | None, namespace: str, service_account: str) -> None:
    """May this identity act for `node` (None: for its own node, whichever it is)?"""
    expected = f"system:serviceaccount:{namespace}:{service_account}"
    if agent.username != expected:
        raise NotAllowed(f"token of {agent.username or 'an unnamed user'}: only {expected} speaks for a node")
    if agent.pod is None or agent.node is None:
        raise NotAllowed(f"token of {expected} is not bound to a pod on a node (use the pod's projected token)")
    if node is not None and agent.node != node:
        raise NotAllowed(f"token of pod {namespace}/{agent.pod} on node {agent.node} may not act for node {node}")


def token_expiry(token: str) -> float | None:
    """The `exp` of a JWT, unverified (None when it is not a JWT or has none): only to keep a cache
    entry from outliving its token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class ReviewCache:
    """Positive reviews by token hash, each until its own deadline, at most `size` of them (LRU)."""

    def __init__(self, *, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[AgentIdentity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, *, now: float) -> AgentIdentity | None:
        key = _digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry[1]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, token: str, agent: AgentIdentity, *, until: float) -> None:
        with self._lock:
            self._entries[_digest(token)] = (agent, until)
            self._entries.move_to_end(_digest(token))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenReviewAuth:
    """Agents' tokens checked by the cluster. `review(token)` is a TokenReview's status (it raises
    TemporaryError when the apiserver cannot answer: the request then fails with 503, not 401)."""

    def __init__(
        self, review: Callable[[str], Mapping[str, Any]], *, now: Callable[[], float], namespace: str,
        service_account: str, ttl: float = CACHE_TTL, cache: ReviewCache | None = None,
    ) -> None:  # fmt: skip
        self.review, self.now, self.ttl = review, now, ttl
        self.namespace, self.service_account = namespace, service_account
        self.cache = cache or ReviewCache()
        self.reviews = 0  # TokenReviews asked (the cache's misses)

    def check(self, token: str, *, node: str | None) -> None:
        if not token:
            raise Unauthenticated("missing bearer token (the agent's projected ServiceAccount token)")
        agent = self.cache.get(token, now=self.now())
        if agent is None:
            agent = self._review(token)
        authorize(agent, node=node, namespace=self.namespace, service_account=self.service_account)

    def _review(self, token: str) -> AgentIdentity:
        self.reviews += 1
        asked = self.now()
        agent = identity(self.review(token))
        expiry = token_expiry(token)
        if expiry is not None and self.ttl > 0:
            until = min(asked + self.ttl, expiry - EXPIRY_MARGIN)
            if until > asked:
                self.cache.put(token, agent, until=until)
        return agent
