"""The REST API through the controller's HTTP server (controller/httpd.py) on 127.0.0.1 and http.client."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from ctlfakes import TOKENS, RecordingFabric, break_commits, make_config

from cni.spec import IFNAME_RULE
from controller.api import Api
from controller.httpd import HttpServer
from controller.service import Service

N1 = {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11"}
POD = {"container_id": "abc", "ifname": "eth0", "namespace": "default", "name": "web-0", "mode": "macvlan",
       "pool": None, "ip": None, "mac": None, "sticky": None}  # fmt: skip


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(
        self, method: str, path: str, body: object = None, *, token: str | None = TOKENS["n1"], raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:  # fmt: skip
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        data = json.loads(response.read())
        connection.close()
        return response.status, data, response


@pytest.fixture
def served(service: Service) -> Iterator[Callable[..., Any]]:
    app = Api(service, tokens=TOKENS, max_body=4096)
    server = HttpServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(server.server_address[1])
    finally:
        server.shutdown()


@pytest.fixture
def call(served: Client, service: Service) -> Client:
    """A server where n1 is registered and located on switch 1, port 4."""
    status, _, _ = served("PUT", "/v1/nodes/n1", N1)
    assert status == 200
    service.node_located(N1["mac"], dpid=1, port=4)
    return served


def test_health_without_a_token_is_liveness_only_and_every_answer_has_the_epoch(served: Client, service: Service) -> None:
    assert served("GET", "/v1/health", token=None)[:2] == (200, {"status": "ok", "epoch": service.epoch})
    status, body, _ = served("GET", "/v1/health", token=TOKENS["n2"])  # any node's token: the full answer
    assert status == 200
    assert (body["status"], body["switches"], body["epoch"]) == ("ok", [1, 2], service.epoch)
    assert {"connected", "stats"} <= set(body)
    assert served("GET", "/v1/health", token="wrong")[0] == 401
    for method, path in [("GET", "/nope"), ("DELETE", "/v1/health"), ("GET", "/v1/placements")]:
        assert served(method, path, token=None)[1]["epoch"] == service.epoch


def test_a_single_controller_is_always_ready(served: Client, service: Service) -> None:
    """Without leader election (controller/leading.py answers it with one) nothing else can serve."""
    assert served("GET", "/v1/ready", token=None)[:2] == (200, {"status": "ready", "epoch": service.epoch})


def test_the_http_servers_own_answers_carry_the_epoch_too(served: Client, service: Service) -> None:
    assert served("GET", "/v1/health#fragment")[:2] == (400, {"error": "Illegal #fragment in Request-URI.",
                                                               "epoch": service.epoch})


def test_register_node(served: Client) -> None:
    assert served("PUT", "/v1/nodes/n1", N1)[:2] == (200, {"node": "n1", "port": None, "epoch": served("GET", "/v1/health")[1]["epoch"]})
    assert served("PUT", "/v1/nodes/n2", {"mac": "02:00:00:00:01:02", "ip": "198.18.0.12"}, token=TOKENS["n2"])[1]["port"] == 3


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [("PUT", "/v1/nodes/n1", None), ("PUT", "/v1/nodes/n1", "wrong"), ("PUT", "/v1/nodes/n1", TOKENS["n2"]),
     ("POST", "/v1/nodes/n1/pods", TOKENS["n2"]), ("DELETE", "/v1/nodes/n1/pods/abc/eth0", None),
     ("PUT", "/v1/nodes/n1/pods", "Bearer"), ("GET", "/v1/placements", "wrong"), ("PUT", "/v1/nodes/nx", "wrong")],
)  # fmt: skip
def test_without_the_right_token_401_and_nothing_changes(
    call: Client, service: Service, method: str, path: str, token: str | None
) -> None:
    call("POST", "/v1/nodes/n1/pods", POD)
    before = (service.placements(), service.list_pods("n1"))
    status, body, _ = call(method, path, {**POD, **N1, "container_id": "other", "pods": []}, token=token)
    assert status == 401
    assert "missing or invalid bearer token" in body["error"]
    assert (service.placements(), service.list_pods("n1")) == before


def test_basic_auth_is_not_a_bearer_token(call: Client) -> None:
    assert call("GET", "/v1/placements", token=None, headers={"Authorization": f"Basic {TOKENS['n1']}"})[0] == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [({k: v for k, v in POD.items() if k != "container_id"}, "container_id: missing"),
     ({**POD, "ifname": 5}, "ifname: expected a non-empty string, got 5"),
     ({**POD, "ifname": "a-very-long-interface"},
      f"ifname: 'a-very-long-interface' is not a Linux interface name ({IFNAME_RULE})"),
     ({**POD, "mode": "bridge"}, "mode: 'bridge' is not one of macvlan, ipvlan"),
     ({**POD, "ip": "198.18.0.300"}, "ip: '198.18.0.300' is not an IPv4 or IPv6 address"),
     ({**POD, "ip": "198.18.0.1"}, "ip: 198.18.0.1 is not an allocatable address of pool default"),
     ({**POD, "mac": "01:00:5e:00:00:01"}, "mac: 01:00:5e:00:00:01 is a multicast address"),
     ({**POD, "pool": "nope"}, "pool: no pool named 'nope'"),
     ({**POD, "uid": 7}, "uid: expected a non-empty string, got 7"),
     ([POD], "body: expected a JSON object")],
)  # fmt: skip
def test_malformed_requests_are_400_naming_the_field(call: Client, body: object, reason: str) -> None:
    status, answer, _ = call("POST", "/v1/nodes/n1/pods", body)
    assert (status, answer["error"]) == (400, reason)


def test_invalid_json_and_oversized_bodies(call: Client) -> None:
    status, body, _ = call("POST", "/v1/nodes/n1/pods", raw=b"{nope")
    assert status == 400 and body["error"].startswith("body: not valid JSON")
    status, body, _ = call("POST", "/v1/nodes/n1/pods", raw=b" " * 5000)
    assert (status, body["error"]) == (413, "body: 5000 bytes is more than the limit of 4096")
    status, body, _ = call("PUT", "/v1/nodes/n1/pods", {"pods": [{"container_id": "a"}]})
    assert (status, body["error"]) == (400, "pods[0].ifname: missing")


def test_unknown_paths_and_methods(call: Client) -> None:
    assert call("GET", "/v2/health")[:2][0] == 404
    status, body, response = call("PATCH", "/v1/nodes/n1/pods")
    assert status == 405 and response.getheader("Allow") == "POST, GET, PUT"


def test_add_pod_and_idempotent_post(call: Client, fabric: RecordingFabric) -> None:
    status, first, _ = call("POST", "/v1/nodes/n1/pods", POD)
    assert status == 200
    assert {k: first[k] for k in ("ip", "prefix", "gateway", "mac", "pool")} == {
        "ip": "198.18.0.100", "prefix": 24, "gateway": "198.18.0.1", "mac": "02:55:c6:12:00:64", "pool": "default"}  # fmt: skip
    assert first["routes"] == [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}]
    assert first["ips"] == [{"address": "198.18.0.100/24", "gateway": "198.18.0.1", "family": 4}]
    assert call("POST", "/v1/nodes/n1/pods", POD)[:2] == (200, first)
    assert call("POST", "/v1/nodes/n1/pods", {**POD, "container_id": "def", "uid": "u-1"})[0] == 200
    status, listed, _ = call("GET", "/v1/nodes/n1/pods")
    assert listed["pods"] == [{"container_id": "abc", "ifname": "eth0", "namespace": "default", "name": "web-0",
                               "ip": "198.18.0.100", "ips": ["198.18.0.100"], "mac": "02:55:c6:12:00:64",
                               "mode": "macvlan", "pool": "default", "uid": None, "vlan": None},
                              {"container_id": "def", "ifname": "eth0", "namespace": "default", "name": "web-0",
                               "ip": "198.18.0.101", "ips": ["198.18.0.101"], "mac": "02:55:c6:12:00:65",
                               "mode": "macvlan", "pool": "default", "uid": "u-1", "vlan": None}]  # fmt: skip
    assert fabric.calls[-3:] == [(1,), (1,), (1,)]


def test_after_a_failed_commit_changes_are_500_and_health_is_503(call: Client, service: Service) -> None:
    break_commits(service.store)  # type: ignore[arg-type]
    status, body, _ = call("POST", "/v1/nodes/n1/pods", POD)
    assert status == 500 and body["error"] == "internal error"
    status, body, _ = call("GET", "/v1/health")
    assert status == 503 and body["error"].endswith("a commit failed (FOREIGN KEY constraint failed); restart the controller")
    assert call("GET", "/v1/health", token=None)[:2] == (503, {"error": "the store failed: restart the controller",
                                                              "epoch": service.epoch})  # what, only to nodes
    assert call("POST", "/v1/nodes/n1/pods", POD)[:2][0] == 500  # and it stays so: nothing half-written is trusted


def test_a_batch_answers_each_request_in_order(call: Client, fabric: RecordingFabric) -> None:
    fabric.calls.clear()
    pods = [POD, {**POD, "container_id": "x", "ifname": "a b"}, {**POD, "container_id": "y", "ip": "198.18.0.100"},
            "nope", {**POD, "container_id": "z"}]
    status, body, _ = call("POST", "/v1/nodes/n1/pods:batch", {"pods": pods})
    assert status == 200
    first, bad, taken, nope, last = body["results"]
    assert (first["ip"], last["ip"]) == ("198.18.0.100", "198.18.0.101")
    assert bad == {"error": f"pods[1].ifname: 'a b' is not a Linux interface name ({IFNAME_RULE})", "status": 400}
    assert taken == {"error": "pod default/web-0: 198.18.0.100 is held by default/web-0", "status": 409}
    assert nope == {"error": "pods[3]: expected an object", "status": 400}
    assert fabric.calls == [(1,)]  # one convergence for the batch


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({}, 400, "pods: expected a non-empty list of pod requests"),
    ({"pods": []}, 400, "pods: expected a non-empty list of pod requests"),
    ({"pods": [{}] * 513}, 400, "pods: 513 pod requests, at most 512 in one batch"),
])  # fmt: skip
def test_a_malformed_batch_is_refused_whole(call: Client, body: object, status: int, reason: str) -> None:
    answer = call("POST", "/v1/nodes/n1/pods:batch", body)
    assert answer[:2][0] == status and answer[1]["error"] == reason


def test_conflicts_are_409(call: Client) -> None:
    call("POST", "/v1/nodes/n1/pods", {**POD, "name": "db-1", "container_id": "db", "ip": "198.18.0.105"})
    status, body, _ = call("POST", "/v1/nodes/n1/pods", {**POD, "ip": "198.18.0.105"})
    assert (status, body["error"]) == (409, "pod default/web-0: 198.18.0.105 is held by default/db-1")


def test_unregistered_node_is_404(served: Client) -> None:
    status, body, _ = served("POST", "/v1/nodes/n3/pods", POD, token=TOKENS["n3"])
    assert (status, body["error"]) == (404, "node n3: not registered (PUT /v1/nodes/n3 first)")


def test_switch_trouble_is_503_with_retry_after(served: Client, call: Client, fabric: RecordingFabric) -> None:
    fabric.down.add(1)
    status, body, response = call("POST", "/v1/nodes/n1/pods", POD)
    assert status == 503 and "did not answer" in body["error"]
    assert response.getheader("Retry-After") == "1"
    served("PUT", "/v1/nodes/n3", {"mac": "02:00:00:00:01:03", "ip": "198.18.0.13"}, token=TOKENS["n3"])
    status, body, response = served("POST", "/v1/nodes/n3/pods", POD, token=TOKENS["n3"])
    assert (status, response.getheader("Retry-After")) == (503, "1")
    assert "node n3's switch port is not known yet" in body["error"]


def test_delete_twice(call: Client) -> None:
    call("POST", "/v1/nodes/n1/pods", POD)
    assert call("DELETE", "/v1/nodes/n1/pods/abc/eth0")[:2][1]["released"] is True
    assert call("DELETE", "/v1/nodes/n1/pods/abc/eth0")[:2][1]["released"] is False
    assert call("GET", "/v1/nodes/n1/pods")[1]["pods"] == []


def test_sync_releases_extras(call: Client, clock: Any) -> None:
    for cid in ("keep", "gone"):
        call("POST", "/v1/nodes/n1/pods", {**POD, "container_id": cid, "name": cid})
    clock.advance(120)
    status, body, _ = call("PUT", "/v1/nodes/n1/pods", {"pods": [{"container_id": "keep", "ifname": "eth0"},
                                                                 {"container_id": "ghost", "ifname": "eth0"}]})  # fmt: skip
    assert status == 200
    assert [p["container_id"] for p in body["pods"]] == ["keep"]
    assert [p["container_id"] for p in body["released"]] == ["gone"]
    assert body["unknown"] == [{"container_id": "ghost", "ifname": "eth0"}]


def test_placements_with_any_token(call: Client, served: Client) -> None:
    call("POST", "/v1/nodes/n1/pods", POD)
    status, body, _ = call("GET", "/v1/placements", token=TOKENS["n3"])
    assert status == 200
    assert {"ip": "198.18.0.100", "mac": "02:55:c6:12:00:64", "node": "n1", "port": 4, "dpid": 1,
            "owner": "default/web-0", "vlan": None} in body["placements"]  # fmt: skip


def test_unexpected_errors_are_500_without_a_traceback(
    call: Client, fabric: RecordingFabric, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(dpids: tuple[int, ...]) -> None:
        raise KeyError("secret internals")

    fabric.on_apply = explode
    with caplog.at_level(logging.ERROR, logger="underlay.api"):
        status, body, _ = call("POST", "/v1/nodes/n1/pods", POD)
    assert status == 500 and body["error"] == "internal error"
    assert "secret" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    assert f"incident={body['incident']}" in caplog.text and "secret internals" in caplog.text
    fabric.on_apply = None
    assert call("POST", "/v1/nodes/n1/pods", POD)[0] == 200  # and the failed ADD was rolled back


def test_hundred_parallel_allocations_get_distinct_addresses(call: Client) -> None:
    def add(i: int) -> tuple[int, str]:
        status, body, _ = call("POST", "/v1/nodes/n1/pods", {**POD, "container_id": f"c{i}", "name": f"p{i}"})
        return status, str(body.get("ip", body.get("error")))

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(add, range(100)))
    assert all(status == 200 for status, _ in results), results
    assert len({ip for _, ip in results}) == 100
    assert len(call("GET", "/v1/nodes/n1/pods")[1]["pods"]) == 100
