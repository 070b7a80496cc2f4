"""The controller's Kubernetes side, started as one: connection, watch caches, pools, store.

`main` asks for it when the config has a `[kubernetes]` table or `store = "kubernetes"`; with the
Kubernetes store, pools come from IPPool objects (the TOML's `[pools]` are then not used) and are
loaded before the service restores its state, so restored leases find their pools.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.agentauth import AUDIENCE, TokenReviewAuth
from controller.config import Config, KubernetesConfig
from controller.errors import TemporaryError
from controller.kube.client import Kube
from controller.kube.pools import PoolManager
from controller.kube.store import KubeStore
from controller.kube.tokenreview import TokenReviewer
from controller.kube.view import KubeView


@dataclass
class Cluster:
    kube: Kube
    view: KubeView
    pools: PoolManager | None = None  # with the Kubernetes store only

    def store(self, config: Config, *, now: Callable[[], float] = time.time) -> KubeStore:
        """The Kubernetes store, with each pool's own cooldown where it sets one."""
        pools, default = self.pools, config.release_cooldown

        def cooldown(pool: str) -> float:
            own = None if pools is None else pools.cooldown(pool)
            return default if own is None else own

        pool_of = pools.pool_of if pools is not None else (lambda ip: None)
        return KubeStore(self.kube, now=now, cooldown=cooldown, pool_of=pool_of)

    def authenticator(self, config: KubernetesConfig, *, now: Callable[[], float] = time.time) -> TokenReviewAuth:
        """Agents' tokens checked by this cluster (`agent_auth = "tokenreview"`)."""
        return TokenReviewAuth(TokenReviewer(self.kube, audiences=[AUDIENCE]), now=now, ttl=config.token_cache,
                               namespace=config.agent_namespace, service_account=config.agent_service_account)

    def stop(self) -> None:
        if self.pools is not None:
            self.pools.stop()
        self.view.stop()
        self.kube.close()


def start(config: KubernetesConfig, *, with_pools: bool, timeout: float = 60.0) -> Cluster:
    """Connect, start the watches and wait until each has listed (so the first requests are served
    from the caches); with `with_pools`, the IPPools too."""
    kube = Kube.connect(kubeconfig=config.kubeconfig, in_cluster=config.in_cluster, context=config.context)
    cluster = Cluster(kube, KubeView(kube).start())
    if with_pools:
        cluster.pools = PoolManager(kube).start()
    deadline = time.monotonic() + timeout
    synced = cluster.view.wait_synced(timeout) and (
        cluster.pools is None or cluster.pools.wait_synced(max(0.0, deadline - time.monotonic())))
    if not synced:
        cluster.stop()
        raise TemporaryError(f"kubernetes: the watches did not list within {timeout:.0f}s from {kube.server}")
    return cluster
