"""`underlay-agent`: the node agent daemon.

Configuration: a TOML file (`--config`, default /etc/underlay/agent.toml when it exists), each key
overridable by a flag of the same name:

    node = "node-1"                            # default: $NODE_NAME (in a cluster), else the host name
    controller_url = "https://198.18.0.2:6680" # unset: standalone (pods need an ipam section)
    controller_address = ""                    # reach the URL's host at this IP instead of resolving it
                                               # (its certificate is still checked against the name)
    token_file = "/etc/underlay/token"
    ca_file = "/etc/underlay/ca.pem"           # what the controller's certificate must come from
    client_cert = ""                           # and key: when the controller asks agents for one
    client_key = ""                            # (its [api] tls_client_ca)
    socket = "/run/underlay/agent.sock"
    master = "eth0"                            # default: the interface of the default route
    netns = ""                                 # the node's namespace; unset in production (hostNetwork)
    state_dir = "/run/underlay/pods"
    shim_ifname = "ulshim0"
    resync_interval = 60
    controller_retry_deadline = 30            # seconds a CNI call waits for a controller that is away
    metrics = ""                               # HOST:PORT (or :PORT, loopback) for Prometheus; unset: none
    log_format = "text"                        # or "json": one JSON object per line (controller/logs.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cni.plugin import DEFAULT_SOCKET
from controller import logs
from controller.metrics import parse_listen, serve
from node_agent.agent import Agent
from node_agent.controller_client import ControllerClient
from node_agent.metrics import AgentMetrics
from node_agent.netlink import NodeNetlink
from node_agent.retry import DEFAULT_DEADLINE, RetryPolicy
from node_agent.server import AgentServer
from node_agent.state import AttachmentStore
from node_agent.sync import Syncer
from node_agent.tokenfile import TokenFile

DEFAULT_CONFIG = Path("/etc/underlay/agent.toml")
log = logging.getLogger("underlay.main")


@dataclass(frozen=True)
class AgentConfig:
    node: str
    controller_url: str | None = None
    controller_address: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    socket: str = DEFAULT_SOCKET
    master: str | None = None
    netns: str | None = None
    state_dir: str = "/run/underlay/pods"
    shim_ifname: str = "ulshim0"
    resync_interval: float = 60.0
    controller_retry_deadline: float = DEFAULT_DEADLINE  # why 30 s: node_agent/retry.py
    log_level: str = "INFO"
    metrics: str | None = None
    log_format: str = "text"


def load_config(argv: list[str] | None = None) -> AgentConfig:
    """File values, then flags on top; unknown file keys are an error (typos must not pass silently)."""
    parser = argparse.ArgumentParser(prog="underlay-agent", description="the underlay node agent")
    parser.add_argument("--config", type=Path, help=f"TOML file (default {DEFAULT_CONFIG} when it exists)")
    for f in fields(AgentConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                            type=float if f.type in (float, "float") else str)
    args = parser.parse_args(argv)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    values: dict[str, Any] = tomllib.loads(path.read_text()) if path else {}
    unknown = set(values) - {f.name for f in fields(AgentConfig)}
    if unknown:
        parser.error(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    values.setdefault("node", os.environ.get("NODE_NAME") or socket.gethostname())  # NODE_NAME: the downward API's
    optional = ("netns", "master", "controller_url", "controller_address", "ca_file", "client_cert", "client_key",
                "metrics")
    options: dict[str, Any] = {k: (v or None) if k in optional else v for k, v in values.items()}
    return AgentConfig(**options)


def build(config: AgentConfig, *, metrics: AgentMetrics | None = None) -> tuple[Agent, AgentServer, Syncer | None]:
    client = None
    if config.controller_url:
        try:
            token = TokenFile(config.token_file).get if config.token_file else None
            client = ControllerClient(config.controller_url, config.node, token=token, ca_file=config.ca_file,
                                      client_cert=config.client_cert, client_key=config.client_key,
                                      connect_to=config.controller_address)
        except (ValueError, OSError) as err:  # a URL we refuse, a CA or certificate file we cannot load
            raise SystemExit(f"underlay-agent: controller_url {config.controller_url}, ca_file {config.ca_file}, "
                             f"token_file {config.token_file}: {err}") from None
    agent = Agent(node=NodeNetlink(config.netns), controller=client, store=AttachmentStore(Path(config.state_dir)),
                  master=config.master, shim_ifname=config.shim_ifname,
                  retry=RetryPolicy(deadline=config.controller_retry_deadline))
    kept = agent.rebuild()
    log.info("event=rebuilt attachments=%d", len(kept))
    syncer = Syncer(agent, client, interval=config.resync_interval) if client else None
    if syncer and client:
        agent.rejoin = syncer.catch_up
        client.on_new_epoch = lambda _: syncer.poke()  # a restarted controller hears from us at once
    return agent, AgentServer(Path(config.socket), agent, metrics=metrics), syncer


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    # A request's threads mostly wait on sockets (controller, netlink) while another parses netlink
    # replies in Python: at the default 5 ms switch interval, an answer that arrived waits for the
    # GIL longer than the call took (the controller's allocation measured 16 ms instead of 9).
    sys.setswitchinterval(0.0005)
    try:
        logs.configure(config.log_level.upper(), fmt=config.log_format)
        listen = parse_listen(config.metrics, what="metrics") if config.metrics else None
    except ValueError as err:
        raise SystemExit(f"underlay-agent: {err}") from None
    metrics = AgentMetrics()
    agent, server, syncer = build(config, metrics=metrics)
    if listen is not None:
        try:
            serve(metrics.registry, *listen)
        except OSError as err:
            raise SystemExit(f"underlay-agent: cannot listen on {config.metrics} (metrics): {err}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    if syncer:
        syncer.start()
    log.info("event=started node=%s socket=%s netns=%s controller=%s metrics=%s", config.node, config.socket,
             config.netns or "-", config.controller_url or "-",
             f"http://{listen[0]}:{listen[1]}/metrics" if listen else "-")
    stop.wait()
    if syncer:
        syncer.stop()
    server.stop()
    agent.node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
