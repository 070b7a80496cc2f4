"""Where the lab's Prometheus metrics are, and a scrape of them.

The controller and every namespace node's agent run in the lab's management namespace, so each
listens on loopback there, on a port of its own: nothing of the lab is reachable from the host's
network, and `ip netns exec <mgmt> curl http://127.0.0.1:9464/metrics` reads it. An agent inside a
User-Mode Linux node has its own loopback the host cannot reach: it serves none.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from typing import Protocol

from deploy.lab import netns

HOST = "127.0.0.1"
CONTROLLER_PORT = 9464
AGENT_PORTS = 9471  # node1's; node2's is the next one, and so on


class Node(Protocol):
    name: str
    spool: str


def agent_port(nodes: Mapping[str, Node], name: str) -> int | None:
    """The metrics port of node `name`'s agent, or None for an agent inside User-Mode Linux."""
    return None if nodes[name].spool else AGENT_PORTS + list(nodes).index(name)


def agent_flags(nodes: Mapping[str, Node], name: str) -> list[str]:
    port = agent_port(nodes, name)
    return [] if port is None else ["--metrics", f"{HOST}:{port}"]


def endpoints(nodes: Mapping[str, Node]) -> dict[str, int]:
    """{"controller": port, "agent node1": port, ...}: what serves metrics, on HOST in the management namespace."""
    agents = {f"agent {name}": agent_port(nodes, name) for name in nodes}
    return {"controller": CONTROLLER_PORT, **{what: port for what, port in agents.items() if port is not None}}


def describe(nodes: Mapping[str, Node], *, ns: str) -> str:
    """One line for `underlay-lab up`: where each process's metrics are and how to read them."""
    where = ", ".join(f"{what} :{port}" for what, port in endpoints(nodes).items())
    return (f"metrics (Prometheus, on {HOST} in netns {ns}): {where}; "
            f"read one: ip netns exec {ns} curl -s http://{HOST}:{CONTROLLER_PORT}/metrics")


def scrape(ns: str, port: int, *, timeout: float = 10) -> str:
    """The text exposition served on HOST:port inside namespace `ns`."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    connection.sock = netns.connect_tcp(ns, HOST, port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"metrics on {HOST}:{port} in netns {ns}: HTTP {response.status}: {body[:200]}")
        return body
    finally:
        connection.close()
