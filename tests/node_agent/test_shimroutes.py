"""The routes that send a pod's Service and node traffic through its node (pure)."""

from __future__ import annotations

import ipaddress

from node_agent.netlink import Route
from node_agent.shimroutes import routes_via, via_node

SERVICES = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("fd00:96::/112")]


def test_the_node_on_link_first_then_the_service_ranges_and_the_nodes_other_addresses_through_it():
    routes = routes_via(node_ip="198.18.5.11", pod_ips=["198.18.5.100"], service_cidrs=SERVICES,
                      node_addresses=["127.0.0.1", "198.18.5.11", "203.0.113.7", "169.254.1.1", "198.51.100.1"])
    assert routes == [Route("198.18.5.11/32"), Route("192.0.2.0/24", "198.18.5.11"),
                      Route("198.51.100.1/32", "198.18.5.11"), Route("203.0.113.7/32", "198.18.5.11")]


def test_clusterips_on_the_node_ipvs_dummy_are_covered_by_their_range_and_the_pods_own_address_is_no_node_address():
    routes = routes_via(node_ip="198.18.5.11", pod_ips=["198.18.5.100"], service_cidrs=SERVICES,
                      node_addresses=["192.0.2.1", "192.0.2.10", "198.18.5.100"])
    assert routes == [Route("198.18.5.11/32"), Route("192.0.2.0/24", "198.18.5.11")]


def test_no_node_address_or_no_pod_address_of_its_family_means_no_routes():
    assert routes_via(node_ip=None, pod_ips=["198.18.5.100"], service_cidrs=SERVICES, node_addresses=[]) == []
    assert routes_via(node_ip="198.18.5.11", pod_ips=["fd00::5"], service_cidrs=SERVICES, node_addresses=[]) == []


def test_ipv6_goes_through_an_ipv6_node_address():
    routes = routes_via(node_ip="fd00::11", pod_ips=["198.18.5.100", "fd00::100"], service_cidrs=SERVICES,
                      node_addresses=["fd00::11", "fe80::1", "2001:db8::1", "198.51.100.1"])
    assert routes == [Route("fd00::11/128"), Route("fd00:96::/112", "fd00::11"), Route("2001:db8::1/128", "fd00::11")]


def test_without_service_ranges_the_node_is_still_reached_through_the_shim():
    assert routes_via(node_ip="198.18.5.11", pod_ips=["198.18.5.100"], service_cidrs=[],
                    node_addresses=["198.18.5.11"]) == [Route("198.18.5.11/32")]


def test_the_service_ranges_are_the_networks_serviceCIDR():
    routes = via_node(node_ip="198.18.5.11", pod_ips=["198.18.5.100"], node_addresses=[],
                      config={"serviceCIDR": ["198.19.96.0/24"]})
    assert routes == [Route("198.18.5.11/32"), Route("198.19.96.0/24", "198.18.5.11")]
