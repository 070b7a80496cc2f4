"""What an agent's token costs the controller per request: a TokenReview against the real API server
(a cache miss) and a check served from controller/agentauth.py's cache (a hit: every CNI call after
the first in `token_cache` seconds).

Run by hand: `.venv/bin/python tests/bench/bench_tokenreview.py [--requests 500]`. Not collected by
pytest. It starts its own control plane (deploy/k8s/testenv.py), makes the underlay-agent
ServiceAccount, a Node and a Pod bound to it, and a token bound to the pod, as in tests/controller;
then times `TokenReviewAuth.check` with the cache off (ttl 0: one review each) and on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "controller")]

from agenttokens import AGENT_SA, AgentTokens  # noqa: E402

from controller.agentauth import TokenReviewAuth  # noqa: E402
from controller.kube.client import NAMESPACES, Kube  # noqa: E402
from controller.kube.tokenreview import TokenReviewer  # noqa: E402
from deploy.k8s.testenv import ControlPlane  # noqa: E402

NAMESPACE = "bench-tokens"


def timed(auth: TokenReviewAuth, token: str, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        auth.check(token, node="bench-node")
        times.append(time.perf_counter() - started)
    return times


def report(what: str, times: list[float]) -> None:
    ordered = sorted(times)
    print(f"{what:28} median {statistics.median(times) * 1e3:8.3f} ms   p99 {ordered[int(len(ordered) * 0.99)] * 1e3:8.3f} ms"
          f"   ({len(times)} checks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    plane = ControlPlane.temporary().start()
    try:
        kube = Kube.connect(kubeconfig=str(plane.kubeconfig))
        kube.create(NAMESPACES.path(), {"metadata": {"name": NAMESPACE}})
        tokens = AgentTokens(kube, NAMESPACE, signing_key=plane.directory / "sa.key")
        tokens.service_account(AGENT_SA)
        tokens.pod("agent", "bench-node")
        token = tokens.token("agent")
        review = TokenReviewer(kube, audiences=["underlay"])
        for ttl, what in ((0.0, "TokenReview each (no cache)"), (10.0, "cached (ttl 10 s)")):
            auth = TokenReviewAuth(review, now=time.time, ttl=ttl, namespace=NAMESPACE, service_account=AGENT_SA)
            auth.check(token, node="bench-node")  # warm: connections, the API server's own cache
            report(what, timed(auth, token, args.requests))
            print(f"{'':28} TokenReviews asked: {auth.reviews}")
        kube.close()
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
