"""Agents' tokens reviewed by the API server (controller/agentauth.py decides what a review means).

A TokenReview is a create that nothing stores: the answer's status says whether the token is one
the cluster issued for these audiences, to whom, and (a bound token) for which pod on which node.
An API server that cannot answer is a `TemporaryError` (the agent retries: a 503), never a refusal;
one that refuses the controller itself (its ClusterRole lacks `create` on `tokenreviews`) is a
deployment problem the controller's operator must see, so it is logged and answered 503 as well:
agents are not to blame and their retries will pass once the role is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from controller.errors import PermanentError, TemporaryError
from controller.kube.client import TOKENREVIEWS, Kube, Object
from controller.logs import kv

LOG = logging.getLogger("underlay.kube")


class TokenReviewer:
    """`reviewer(token)` is the TokenReview's status for `audiences`."""

    def __init__(self, kube: Kube, *, audiences: Sequence[str]) -> None:
        self.kube, self.audiences = kube, list(audiences)

    def __call__(self, token: str) -> Object:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": self.audiences}}  # fmt: skip
        try:
            answer = self.kube.create(TOKENREVIEWS.path(), body)
        except PermanentError as err:
            LOG.error(kv("token review refused to the controller", error=err))
            raise TemporaryError("cannot review the agent's token now: the API server refused the controller's "
                                 "TokenReview (its ClusterRole needs create on tokenreviews)", delay=5.0) from err
        status: Object = answer.get("status") or {}
        return status
