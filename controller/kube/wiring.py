"""The controller's Kubernetes side, started as one: connection, watch caches, pools, store.

`main` asks for it when the config has a `[kubernetes]` table or `store = "kubernetes"`; with the
Kubernetes store, pools come from IPPool objects (the TOML's `[pools]` are then not used) and are
loaded before the service restores its state, so restored leases find their pools.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.config import Config, KubernetesConfig
from controller.errors import TemporaryError
from controller.kube.client import Kube
from controller.kube.pools import PoolManager
from controller.kube.store import KubeStore
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

        return KubeStore(self.kube, now=now, cooldown=cooldown)

    def stop(self) -> None:
        if self.pools is not None:
            self.pools.stop()
        self.view.stop()
        self.kube.close()


def start(config: KubernetesConfig, *, with_pools: bool, timeout: float = 30.0) -> Cluster:
    """Connect and start the watches; with `with_pools`, wait until the IPPools are listed."""
    kube = Kube.connect(kubeconfig=config.kubeconfig, in_cluster=config.in_cluster, context=config.context)
    cluster = Cluster(kube, KubeView(kube).start())
    if with_pools:
        cluster.pools = PoolManager(kube).start()
        if not cluster.pools.wait_synced(timeout):
            cluster.stop()
            raise TemporaryError(f"kubernetes: IPPools not listed within {timeout:.0f}s from {kube.server}")
    return cluster
