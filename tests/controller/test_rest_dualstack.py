"""The dual-stack REST contract (controller/API.md, "Dual stack") through the real HTTP server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_rest_api import POD, Client, call, served  # noqa: F401  (the HTTP server fixtures)
from test_service_dualstack import dual_config

from controller.service import Service


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service(dual_config())


def test_a_pod_of_a_dual_stack_pool_gets_both_ips_in_one_answer(call: Client) -> None:
    status, answer, _ = call("POST", "/v1/nodes/n1/pods", POD)
    assert status == 200, answer
    assert {k: answer[k] for k in ("ip", "prefix", "gateway", "mac", "pool")} == {
        "ip": "198.18.0.100", "prefix": 24, "gateway": "198.18.0.1", "mac": "02:55:c6:12:00:64", "pool": "dual"}
    assert answer["ips"] == [{"address": "198.18.0.100/24", "gateway": "198.18.0.1", "family": 4},
                             {"address": "fd00:18::100/64", "gateway": "fd00:18::1", "family": 6}]
    assert answer["routes"] == [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}, {"dst": "::/0", "gw": "fd00:18::1"}]
    _, listed, _ = call("GET", "/v1/nodes/n1/pods")
    assert listed["pods"][0]["ips"] == ["198.18.0.100", "fd00:18::100"]
    _, placed, _ = call("GET", "/v1/placements")
    assert [(p["ip"], p["mac"], p["port"]) for p in placed["placements"] if p["owner"] == "default/web-0"] == [
        ("198.18.0.100", "02:55:c6:12:00:64", 4), ("fd00:18::100", "02:55:c6:12:00:64", 4)]


def test_requested_ips_of_both_families_in_any_form(call: Client) -> None:
    status, answer, _ = call("POST", "/v1/nodes/n1/pods", {**POD, "ips": ["FD00:18:0::101", "198.18.0.105"]})
    assert status == 200, answer
    assert [entry["address"] for entry in answer["ips"]] == ["198.18.0.105/24", "fd00:18::101/64"]


def test_an_ipv6_only_pod_answers_ipv6_in_ip_with_no_ipv4_gateway(call: Client) -> None:
    status, answer, _ = call("POST", "/v1/nodes/n1/pods", {**POD, "pool": "only6"})
    assert status == 200, answer
    assert (answer["ip"], answer["prefix"], answer["gateway"]) == ("fd00:19::2", 120, "fd00:19::1")
    assert answer["ips"] == [{"address": "fd00:19::2/120", "gateway": "fd00:19::1", "family": 6}]


@pytest.mark.parametrize(
    ("ips", "status", "reason"),
    [
        ("fd00:18::5", 400, 'ips: expected a list of at most two addresses (one per family), got "fd00:18::5"'),
        (["198.18.0.5", "fd00:18::5", "fd00:18::6"], 400, "ips: expected a list of at most two addresses"),
        ([5], 400, "ips[0]: expected a non-empty string, got 5"),
        (["fd00:18::zz"], 400, "ips[0]: 'fd00:18::zz' is not an IPv4 or IPv6 address"),
        (["198.18.0.5", "198.18.0.6"], 400, "ips: two IPv4 addresses (198.18.0.5, 198.18.0.6); at most one per family"),
        (["fd00:19::5"], 400, "ip: fd00:19::5 is not an allocatable address of pool dual"),
    ],
)
def test_malformed_ips_are_400_naming_the_field(call: Client, ips: Any, status: int, reason: str) -> None:
    answer = call("POST", "/v1/nodes/n1/pods", {**POD, "pool": "dual", "ips": ips})
    assert (answer[0], answer[1]["error"][:len(reason)]) == (status, reason)
    assert call("GET", "/v1/nodes/n1/pods")[1]["pods"] == []


def test_in_a_batch_the_field_path_names_the_request_and_only_it_fails(call: Client) -> None:
    status, answer, _ = call("POST", "/v1/nodes/n1/pods:batch", {"pods": [
        {**POD, "container_id": "a", "ips": ["fd00:18::101"]}, {**POD, "container_id": "b", "ips": ["x"]}]})
    assert status == 200
    assert answer["results"][1] == {"error": "pods[1].ips[0]: 'x' is not an IPv4 or IPv6 address", "status": 400}
    assert [entry["address"] for entry in answer["results"][0]["ips"]] == ["198.18.0.100/24", "fd00:18::101/64"]


def test_the_second_family_exhausted_is_409_and_leaves_nothing(call: Client) -> None:
    for cid in ("a", "b"):
        assert call("POST", "/v1/nodes/n1/pods", {**POD, "container_id": cid})[0] == 200
    status, answer, _ = call("POST", "/v1/nodes/n1/pods", {**POD, "container_id": "c"})
    assert (status, answer["error"]) == (409, "pod default/web-0: pool dual: IPv6 exhausted (all 2 addresses are held or reserved)")
    assert [pod["container_id"] for pod in call("GET", "/v1/nodes/n1/pods")[1]["pods"]] == ["a", "b"]


def test_a_node_registers_its_ipv6_address_too(call: Client) -> None:
    status, answer, _ = call("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11", "ip6": "fd00:18::0:11"})
    assert (status, answer["port"]) == (200, 4)
    _, placed, _ = call("GET", "/v1/placements")
    assert [p["ip"] for p in placed["placements"] if p["owner"] == "node/n1"] == ["198.18.0.11", "fd00:18::11"]
    status, answer, _ = call("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11", "ip6": "fd00:18::100"})
    assert (status, answer["error"]) == (409, "node n1: fd00:18::100 is in pool dual's ranges; exclude it from the pool")
    status, answer, _ = call("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11", "ip6": 6})
    assert (status, answer["error"]) == (400, "ip6: expected a non-empty string, got 6")
