"""`underlay-controller`: the store, the service, os-ken's OpenFlow server and the agents' REST API.

Start-up order matters: the store is loaded (and so the desired state known) before os-ken listens,
so the first switch to connect is reconciled against the real state, never against an empty one.
os-ken 4.x runs on native threads and has no WSGI server; the REST API is served by cheroot behind
our Gate (controller/httpd.py: a pool of threads for requests, one thread for connections), over
TLS unless the config asks for plain HTTP on loopback. Only the configured addresses are listened
on (os-ken would also open the legacy 6633 when no port is set: we always set it).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import config as configuration
from controller import logs
from controller.agentauth import Authenticator
from controller.api import Api
from controller.errors import ControllerError, SwitchUnavailable
from controller.httpd import HttpServer, tls_context
from controller.leader import Election, Timing
from controller.leading import Leadership, identity
from controller.leaks import LeakCollector
from controller.ipam import Usage
from controller.metrics import ControllerMetrics, serve
from controller.links import LinkMonitor, links_monitor, start_prober
from controller.nodelife import NodeLifecycle
from controller.service import Service
from controller.store import SqliteStore, Store
from controller.switch import SessionStatus
from openflow.flows import Flow

if TYPE_CHECKING:
    from controller.kube.wiring import Cluster

LOG = logging.getLogger("underlay.controller")
ECHO_INTERVAL = 3.0
ECHO_MISSES = 5


class LateFabric:
    """The service is built before os-ken's app exists; this forwards to the app once it does."""

    def __init__(self) -> None:
        self.app: Any = None

    def apply(self, dpids: Iterable[int], *, timeout: float) -> None:
        if self.app is None:
            raise SwitchUnavailable("the OpenFlow application is not running yet")
        self.app.apply(dpids, timeout=timeout)

    def seen(self, dpids: Iterable[int], *, cookie: int, mac: str | None = None, ip: str | None = None
             ) -> dict[int, tuple[int, ...]]:
        if self.app is None:
            raise SwitchUnavailable("the OpenFlow application is not running yet")
        found: dict[int, tuple[int, ...]] = self.app.seen(dpids, cookie=cookie, mac=mac, ip=ip)
        return found

    def stats(self) -> dict[str, int]:
        return self.app.stats() if self.app is not None else {}

    def connected(self) -> list[int]:
        return self.app.connected() if self.app is not None else []

    def session_status(self, dpid: int) -> SessionStatus | None:
        return self.app.session_status(dpid) if self.app is not None else None

    def resync(self, dpid: int) -> None:
        if self.app is None:
            raise SwitchUnavailable("the OpenFlow application is not running yet")
        self.app.resync(dpid)

    def topology(self) -> dict[str, Any]:
        """The fabric's switches, links and tree (GET /v1/topology)."""
        if self.app is None:
            raise SwitchUnavailable("the OpenFlow application is not running yet")
        status: dict[str, Any] = self.app.links.status(now=time.monotonic())
        return status

    def read_flows(self, dpid: int, *, cookie: int) -> frozenset[Flow]:
        if self.app is None:
            raise SwitchUnavailable("the OpenFlow application is not running yet")
        flows: frozenset[Flow] = self.app.read_flows(dpid, cookie=cookie)
        return flows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="underlay-controller", description=__doc__.splitlines()[0],
                                     epilog=configuration.API_KEYS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="TOML config file")
    parser.add_argument("--store", help='SQLite file, or "kubernetes" (overrides `store`)')
    parser.add_argument("--openflow", metavar="HOST:PORT", help="OpenFlow listen address (overrides [openflow])")
    parser.add_argument("--api", metavar="HOST:PORT", help="REST listen address (overrides [api])")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus metrics listen address (overrides [metrics])")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: debug")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text", help="json: one JSON object per line")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> configuration.Config:
    """The config file, with the command line's flags over it."""
    overrides: dict[str, Any] = {"store": args.store} if args.store else {}
    for section, address in (("openflow", args.openflow), ("api", args.api), ("metrics", args.metrics)):
        if address:
            host, _, port = address.rpartition(":")
            if not port.isdigit():
                raise configuration.ConfigError(f"--{section} {address}: expected HOST:PORT")
            overrides[section] = {"host": host, "port": int(port)}
    config = configuration.load(args.config, overrides=overrides)
    configuration.check_servable(config)
    return config


def setup_logging(verbosity: int, *, fmt: str = "text") -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logs.configure(level, fmt=fmt)
    logging.getLogger("underlay").setLevel(min(level, logging.INFO))  # our lifecycle lines always show
    logging.getLogger("os_ken").setLevel(max(level, logging.WARNING))


def configure_os_ken(cfg: configuration.OpenFlowConfig) -> None:
    from os_ken import cfg as os_ken_cfg
    from os_ken.base import app_manager  # noqa: F401  (imports os-ken in the order that registers ofp_* options)

    conf = os_ken_cfg.CONF
    conf(args=[], project="underlay")
    conf.set_override("ofp_listen_host", cfg.host)
    conf.set_override("ofp_tcp_listen_port", cfg.port)
    conf.set_override("ofp_ssl_listen_port", cfg.port)  # used instead of the TCP port when TLS is set
    conf.set_override("echo_request_interval", ECHO_INTERVAL)
    conf.set_override("maximum_unreplied_echo_requests", ECHO_MISSES)
    for key in ("ctl_privkey", "ctl_cert", "ca_certs"):
        conf.set_override(key, getattr(cfg, key))


def start_openflow(service: Service | None, fabric: LateFabric, *, roles: Leadership | None = None,
                   links: LinkMonitor | None = None, metrics: ControllerMetrics | None = None,
                   audit_interval: float = 0.0) -> None:
    from os_ken.base.app_manager import AppManager

    manager = AppManager.get_instance()
    manager.load_apps(["controller.ofapp"])
    contexts = manager.create_contexts()
    contexts["underlay"], contexts["roles"], contexts["links"] = service, roles, links
    contexts["metrics"] = metrics
    contexts["audit_interval"] = audit_interval
    manager.instantiate_apps(**contexts)
    fabric.app = manager.applications["UnderlayApp"]


def check_free(host: str, port: int) -> None:
    """Fail now, with the address named, if os-ken could not listen there (it would only log it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def serve_api(app: Api | Leadership, cfg: configuration.Config, *, metrics: ControllerMetrics | None = None) -> HttpServer:
    api = cfg.api
    tls = None if api.tls_cert is None or api.tls_key is None else tls_context(
        cert=api.tls_cert, key=api.tls_key, client_ca=api.tls_client_ca)
    server = HttpServer(app, api.host, api.port, limits=api.limits, tls=tls,
                        answered=None if metrics is None else metrics.answered)
    threading.Thread(target=server.serve_forever, name="rest-api", daemon=True).start()
    return server


def agent_auth(cluster: Cluster | None, cfg: configuration.Config) -> Authenticator | None:
    """With `agent_auth = "tokenreview"`, the cluster checks agents' tokens; else the config's tokens."""
    if cluster is None or cfg.kubernetes is None or not cfg.kubernetes.tokenreview:
        return None
    return cluster.authenticator(cfg.kubernetes)


def connect_cluster(cfg: configuration.Config) -> Cluster | None:
    """The cluster connection when the config has a [kubernetes] table (with the Kubernetes store,
    its IPPools are watched too)."""
    if cfg.kubernetes is None:
        return None
    from controller.kube import wiring  # imports the Kubernetes client (~20 MB): only when used

    return wiring.start(cfg.kubernetes, with_pools=cfg.store == configuration.KUBERNETES_STORE)


def serve_metrics(metrics: ControllerMetrics, cfg: configuration.Config, fabric: LateFabric) -> None:
    """The scrape reads pools from the service (the leader's, once there is one) and switches from
    the OpenFlow app; served only with a [metrics] table (or --metrics)."""
    def pools() -> list[Usage]:
        service = None if fabric.app is None else fabric.app.service
        return [] if service is None else service.pool_usage()

    metrics.watch(pools=pools, switches=lambda: [] if fabric.app is None else fabric.app.views())
    if cfg.metrics is not None:
        serve(metrics.registry, cfg.metrics.host, cfg.metrics.port)


def open_service(cfg: configuration.Config, cluster: Cluster | None, fabric: LateFabric,
                 metrics: ControllerMetrics | None = None) -> Service:
    """The store the config names, loaded, and the service on it. With the Kubernetes store the
    pools are the IPPool objects, loaded before the service starts."""
    store: Store
    if cluster is None or cluster.pools is None:
        store = SqliteStore(cfg.store)
    else:
        cfg = replace(cfg, pools={pool.name: pool for pool in cluster.pools.configs()})
        store = cluster.store(cfg)
    view = None if cluster is None else cluster.view  # with it, pods get what the cluster's objects say
    service = Service(store, cfg, now=time.time, fabric=fabric, cluster=view, metrics=metrics)
    if cluster is not None and cluster.pools is not None:
        cluster.pools.bind(service.set_pools)
    return service


def make_api(service: Service, cfg: configuration.Config, cluster: Cluster | None) -> Api:
    return Api(service, tokens=cfg.tokens, auth=agent_auth(cluster, cfg), max_body=cfg.api.limits.max_body,
               operators=cfg.api.operator_tokens)


def elect(cfg: configuration.Config, cluster: Cluster, fabric: LateFabric, stop: threading.Event,
          metrics: ControllerMetrics | None = None) -> Leadership:
    """A replica that leads only while it holds the Lease (controller/leading.py); its election
    starts with `Leadership.start`, once the OpenFlow app exists."""
    from controller.kube.lease import KubeLease

    assert cfg.kubernetes is not None
    kube = cfg.kubernetes

    def promote(generation: int) -> Api:
        service = open_service(cfg, cluster, fabric, metrics)
        fabric.app.links.reset(time.monotonic())  # what it saw as a follower (nothing) is no evidence
        fabric.app.service = service
        start_leak_collector(service, cfg, stop)
        start_node_lifecycle(service, cluster, cfg, stop)
        return make_api(service, cfg, cluster)

    leadership = Leadership(identity(), Timing(kube.lease_duration, kube.renew_deadline, kube.retry_period),
                            promote=promote, wake=lambda: fabric.app.wake())
    lease = KubeLease(cluster.kube, kube.lease_namespace, kube.lease_name)
    leadership.election = Election(leadership.elector, lease, leadership, clock=time.monotonic, stop=stop)
    return leadership


def start_leak_collector(service: Service, cfg: configuration.Config, stop: threading.Event) -> LeakCollector | None:
    """With a cluster view, the leak collector's passes run in a thread of their own until `stop`."""
    if service.cluster is None:
        return None
    collector = LeakCollector(service, service.cluster, now=time.time, grace=cfg.gc_grace)
    threading.Thread(target=collector.run, args=(stop,), kwargs={"interval": cfg.gc_interval}, name="leak-collector",
                     daemon=True).start()
    return collector


def start_node_lifecycle(service: Service, cluster: Cluster | None, cfg: configuration.Config,
                         stop: threading.Event) -> NodeLifecycle | None:
    """With the Kubernetes store, nodes the cluster has lost are forgotten (controller/nodelife.py)."""
    if cluster is None or cfg.kubernetes is None or cfg.store != configuration.KUBERNETES_STORE:
        return None
    lifecycle = NodeLifecycle(service, cluster.view, now=time.time, grace=cfg.kubernetes.node_grace)
    threading.Thread(target=lifecycle.run, args=(stop,), kwargs={"interval": cfg.kubernetes.node_interval},
                     name="node-lifecycle", daemon=True).start()
    return lifecycle


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, fmt=args.log_format)
    try:
        cfg = load_config(args)
    except configuration.ConfigError as err:  # it names the file, or the flag
        print(f"underlay-controller: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    fabric = LateFabric()
    metrics = ControllerMetrics()
    electing = cfg.kubernetes is not None and cfg.kubernetes.leader_election
    try:
        cluster = connect_cluster(cfg)
        service = None if electing else open_service(cfg, cluster, fabric, metrics)  # a replica: once it leads
    except ControllerError as err:  # the API server cannot be reached, or refuses us
        print(f"underlay-controller: {err}", file=sys.stderr)
        return 1
    leadership = elect(cfg, cluster, fabric, stop, metrics) if electing and cluster is not None else None
    try:
        check_free(cfg.openflow.host, cfg.openflow.port)
    except OSError as err:
        print(f"underlay-controller: cannot listen on {cfg.openflow.host}:{cfg.openflow.port} (OpenFlow): {err}",
              file=sys.stderr)
        return 1
    try:
        front = make_api(service, cfg, cluster) if service is not None else leadership
        assert front is not None  # without a service, a replica: its leadership answers until it leads
        api = serve_api(front, cfg, metrics=metrics)
    except ssl.SSLError as err:
        print(f"underlay-controller: api.tls_cert {cfg.api.tls_cert}, api.tls_key {cfg.api.tls_key}: {err}",
              file=sys.stderr)
        return 2
    except OSError as err:
        print(f"underlay-controller: cannot listen on {cfg.api.host}:{cfg.api.port} (REST API): {err}",
              file=sys.stderr)
        return 1
    links = links_monitor(cfg, now=time.monotonic())
    try:
        serve_metrics(metrics, cfg, fabric)
    except OSError as err:
        api.shutdown()
        assert cfg.metrics is not None  # only a configured listener binds
        print(f"underlay-controller: cannot listen on {cfg.metrics.host}:{cfg.metrics.port} (metrics): {err}",
              file=sys.stderr)
        return 1
    try:
        configure_os_ken(cfg.openflow)
        start_openflow(service, fabric, roles=leadership, links=links, metrics=metrics,
                       audit_interval=cfg.openflow.audit_interval)
    except BaseException:
        api.shutdown()  # its pool's threads would keep the process from exiting
        raise
    start_prober(links, fabric.app.send_frame, stop)
    if service is not None:
        start_leak_collector(service, cfg, stop)
        start_node_lifecycle(service, cluster, cfg, stop)
    if leadership is not None:
        leadership.start()
    # Everything loaded so far (modules, os-ken, the restored state) lives as long as the process:
    # keep the cyclic collector from scanning it again on every full collection. And collect young
    # objects less often: a batch of placements allocates tens of thousands of tracked objects, and
    # at the default threshold (700) most of them survive a collection only to be scanned again
    # later (measured: ~10% of the controller's CPU per pod at 10,000 placements; RSS unchanged).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    LOG.info("started epoch=%s openflow=%s:%d api=%s://%s:%d store=%s metrics=%s", service and service.epoch,
             cfg.openflow.host, cfg.openflow.port, cfg.api.scheme, cfg.api.host, cfg.api.port, cfg.store,
             "-" if cfg.metrics is None else f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics")
    while not stop.wait(1.0):
        pass
    LOG.info("stopping epoch=%s", service and service.epoch)
    if leadership is not None:
        leadership.release()
    api.shutdown()
    fabric.app.close()
    if fabric.app.service is not None:
        fabric.app.service.store.close()
    if cluster is not None:
        cluster.stop()
    logging.shutdown()
    # os-ken's native hub cannot stop its threads (hub.kill is a no-op): leave without waiting
    # for them; the switches keep their flows (fail_mode=secure) and reconnect to the next run.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
