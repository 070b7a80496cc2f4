"""Which of a pod's destinations it must reach through its own node, and the routes that say so.

An underlay pod's packets leave on the segment: to a Service's ClusterIP they would go to the
segment's gateway, which knows nothing of ClusterIPs, and never pass the node where kube-proxy's
rules (DNAT to a backend, masquerade) are. And a macvlan/ipvlan child cannot reach its own parent,
so the node's own addresses are reachable only through the host shim. So the pod routes
(Spiderpool's coordinator does the same, through a veth):

- the node's address on the uplink on-link (the agent also gives the pod a permanent neighbour entry
  for it, at the shim's MAC), whatever subnet it is in;
- the cluster's Service ranges (the conflist's `serviceCIDR`) via that address;
- every other address of the node via that address (a second NIC's, a bridge's): also the replies
  to the node's own probes, which would otherwise leave by the segment's gateway.

Kube-proxy must masquerade what it forwards from these pods (their addresses lie outside its
`clusterCIDR`, or `masqueradeAll: true`): the backend's reply must come back through this node to be
translated back, and without it would go straight to the pod on the segment.

Per family: a family's routes are made only when the pod has an address of that family and the node
one to route through. Pure: addresses in, routes out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from cni.spec import JsonObject, service_cidrs
from node_agent.netlink import Route

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def via_node(*, node_ip: str | None, pod_ips: Iterable[str], node_addresses: Iterable[str],
             config: JsonObject) -> list[Route]:
    """The routes the pod needs to reach `node_ip`'s node and, through it, the Service ranges of
    the network `config` and the node's other addresses; the on-link route comes first (the others'
    gateway needs it)."""
    return routes_via(node_ip=node_ip, pod_ips=pod_ips, node_addresses=node_addresses,
                      service_cidrs=service_cidrs(config))


def routes_via(*, node_ip: str | None, pod_ips: Iterable[str], node_addresses: Iterable[str],
               service_cidrs: Sequence[Network]) -> list[Route]:
    """`via_node` with the Service ranges given."""
    if node_ip is None:
        return []
    gateway = ipaddress.ip_address(node_ip)
    pods = {ipaddress.ip_address(ip) for ip in pod_ips}
    if not any(pod.version == gateway.version for pod in pods):
        return []
    services = [net for net in service_cidrs if net.version == gateway.version]
    routes = [Route(dst=_host(gateway))]
    routes += [Route(dst=str(net), gw=node_ip) for net in services]
    others = sorted({ipaddress.ip_address(a) for a in node_addresses} - pods - {gateway}, key=int)
    routes += [Route(dst=_host(address), gw=node_ip) for address in others
               if address.version == gateway.version and _routable(address, services)]
    return routes


def _routable(address: ipaddress.IPv4Address | ipaddress.IPv6Address, services: Sequence[Network]) -> bool:
    """A node address worth a route: not a loopback or link-local one (the pod has its own), not
    inside a Service range (kube-proxy's IPVS mode puts every ClusterIP on a dummy interface of the
    node: the range's one route covers them)."""
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return False
    return not any(address in net for net in services)


def _host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{address}/{address.max_prefixlen}"
