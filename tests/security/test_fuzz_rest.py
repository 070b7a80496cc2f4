"""A hostile HTTP client against the controller's REST API: random methods, paths, headers and
bodies (JSON that is almost a valid request, any JSON, any bytes, deep nesting) through the real
HTTP server. Every answer must be below 500 and a JSON object; a 4xx carries an `error` string
naming what was wrong; a refused request changes nothing in the store.

The API is served as tests/controller/test_rest_api.py serves it: the controller's HTTP server on
127.0.0.1, a real Service on a SQLite file, the switch side recorded by ctlfakes.RecordingFabric.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from ctlfakes import TOKENS, Clock, RecordingFabric, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.spec import valid_container_id, valid_ifname, valid_namespace, valid_pod_name
from controller.api import Api
from controller.httpd import HttpServer
from controller.service import Service
from controller.store import SqliteStore

POD = {"container_id": "fuzz", "ifname": "eth0", "namespace": "default", "name": "web-0", "mode": "macvlan",
       "pool": None, "ip": None, "mac": None, "sticky": None, "ips": None}  # fmt: skip
NODE1 = {"mac": "02:00:00:00:01:01", "ip": "198.18.0.11"}


@dataclass
class RestTarget:
    """What a test attacks (the port) and what it checks (the service's store and clock)."""

    port: int
    service: Service
    store: SqliteStore
    tokens: dict[str, str]
    clock: Clock


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestTarget]:
    """A controller with node n1 registered and located (switch 1, port 4), as an agent leaves it."""
    store, clock = SqliteStore(tmp_path_factory.mktemp("rest") / "store.sqlite"), Clock()
    service = Service(store, make_config(), now=clock, fabric=RecordingFabric())
    service.register_node("n1", mac=NODE1["mac"], ip=NODE1["ip"])
    service.node_located(NODE1["mac"], dpid=1, port=4)
    server = HttpServer(Api(service, tokens=TOKENS), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RestTarget(server.server_address[1], service, store, dict(TOKENS), clock)
    finally:
        server.shutdown()
        store.close()


def call(target: RestTarget, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def answer_is_sound(target: RestTarget, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    """The property, for one request: status < 500, a JSON object with the epoch, a 4xx says why,
    and the store is as it was unless the request succeeded."""
    before = target.store.load()
    status, answer = call(target, method, path, body, headers)
    assert status < 500, (status, answer)
    assert isinstance(answer, dict) and answer["epoch"] == target.service.epoch
    if status >= 400:
        assert isinstance(answer["error"], str) and answer["error"], answer
        assert target.store.load() == before, f"{status} {answer['error']} changed the store"
    return status


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Values that sit on the edges of the rules (names, addresses), besides any text and any JSON.
EDGES = ["", " ", "\x00", "a\nb", "a/b", "-x", "x-", "Default", "web_0", "a..b", "eth%d", "é" * 8, ".", "a" * 300,
         "198.18.0.300", "198.18.0.1", "0.0.0.0", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "02:00:00:00:01:01",
         "ipvlan", "default", "nope", "fd00:18::5", "::", "fe80::1%eth0", "::ffff:198.18.0.5",
         ["198.18.0.5", "fd00:18::5"], ["198.18.0.5", "198.18.0.6"], ["fd00::1", "fd00::1", "fd00::1"]]  # fmt: skip
DROPPED = object()
# A valid pod request with one or two fields changed or dropped: the closer to valid, the deeper
# into the service a request gets.
ALMOST_POD = st.lists(
    st.tuples(st.sampled_from(sorted(POD)), st.sampled_from(EDGES) | st.text(max_size=16) | JSON | st.just(DROPPED)),
    max_size=2,
).map(lambda changes: {k: v for k, v in {**POD, **dict(changes)}.items() if v is not DROPPED})
POD_BODIES = ALMOST_POD.map(json.dumps).map(str.encode)
BATCH_BODIES = st.lists(ALMOST_POD | JSON, max_size=4).map(lambda pods: json.dumps({"pods": pods}).encode())
BODIES = st.one_of(
    POD_BODIES, BATCH_BODIES,
    st.fixed_dictionaries({"mac": JSON | st.sampled_from(EDGES), "ip": JSON | st.sampled_from(EDGES)},
                          optional={"ip6": JSON | st.sampled_from(EDGES)}).map(json.dumps).map(str.encode),
    JSON.map(json.dumps).map(str.encode),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth),
    st.text(max_size=60).map(str.encode),
    st.binary(max_size=200),
)  # fmt: skip
SEGMENT = st.sampled_from(["n1", "n2", "nx", "fuzz", "eth0", ""]) | st.text(max_size=10)
PATHS = st.one_of(
    st.builds(lambda node: f"/v1/nodes/{node}", SEGMENT),
    st.builds(lambda node, suffix: f"/v1/nodes/{node}/pods{suffix}", SEGMENT, st.sampled_from(["", ":batch", ":x"])),
    st.builds(lambda node, cid, ifname: f"/v1/nodes/{node}/pods/{cid}/{ifname}", SEGMENT, SEGMENT, SEGMENT),
    st.sampled_from(["/v1/placements", "/v1/health", "/", "/v1/nodes", "/v1/nodes/n1/pods/a/b/c"]),
).map(lambda path: quote(path, safe="/:")) | st.text(alphabet="/%:?#.abn1v", max_size=30).map(lambda p: "/" + p)
METHODS = st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"])
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Accept", "Expect", "X-Forwarded-For", "Cookie", "Authorization"]) |
    st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True), HEADER_VALUE, max_size=3)  # fmt: skip


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(method=METHODS, path=PATHS, body=BODIES, headers=HEADERS, token=st.sampled_from(["n1", "n2", None, "bad"]))
def test_any_request_is_answered_below_500(rest: RestTarget, method: str, path: str, body: bytes,
                                           headers: dict[str, str], token: str | None) -> None:
    if method == "HEAD":  # no body comes back to check
        return
    if token is not None:  # mostly a valid token, so requests get past authentication to the body
        headers = {**headers, "Authorization": f"Bearer {rest.tokens.get(token, token)}"}
    answer_is_sound(rest, method, path, body if method in ("PUT", "POST", "PATCH") else None, headers)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(request=st.one_of(st.tuples(st.just("/v1/nodes/n1/pods"), POD_BODIES),
                         st.tuples(st.just("/v1/nodes/n1/pods:batch"), BATCH_BODIES),
                         st.tuples(st.sampled_from(["/v1/nodes/n1/pods", "/v1/nodes/n1/pods:batch"]), BODIES)))
def test_any_pod_body_from_an_authenticated_node(rest: RestTarget, request: tuple[str, bytes]) -> None:
    """Past the token, into field validation and the service: the hard part of the property. What
    gets stored obeys the rules a runtime, the kernel and Kubernetes hold the names to."""
    path, body = request
    answer_is_sound(rest, "POST", path, body, {"Authorization": f"Bearer {rest.tokens['n1']}"})
    for pod in rest.store.load().pods:
        assert valid_container_id(pod.container_id) and valid_ifname(pod.ifname), pod
        assert valid_namespace(pod.namespace) and valid_pod_name(pod.name), pod
        rest.service.release(pod.node, pod.container_id, pod.ifname)  # the pool must not run dry
    rest.clock.advance(3600)  # past the release cooldown


# The cases issue 16 reported, fixed: each is a 400 naming the field, and nothing is stored.
@pytest.mark.parametrize(("body", "error"), [
    (b"[" * 60_000, "body: nested deeper than 8 levels"),
    (json.dumps({**POD, "container_id": "\u0000"}).encode(), "container_id: '\\x00' contains a control character"),
    (json.dumps({**POD, "container_id": " "}).encode(), "container_id: ' ' is not a CNI container ID"),
    (json.dumps({**POD, "container_id": "\ud800"}).encode(), "body: string '\\ud800' is not valid Unicode"),
])  # fmt: skip
def test_issue_16_cases(rest: RestTarget, body: bytes, error: str) -> None:
    before = rest.store.load()
    status, answer = call(rest, "POST", "/v1/nodes/n1/pods", body, {"Authorization": f"Bearer {rest.tokens['n1']}"})
    assert status == 400 and answer["error"].startswith(error), answer
    assert rest.store.load() == before


def test_a_valid_request_still_places_a_pod(rest: RestTarget) -> None:
    """The fuzzed requests above are refused for what they are, not because nothing gets through."""
    status, answer = call(rest, "POST", "/v1/nodes/n1/pods", json.dumps({**POD, "container_id": "ok"}).encode(),
                          {"Authorization": f"Bearer {rest.tokens['n1']}"})
    assert status == 200 and answer["ip"].startswith("198.18.0."), answer
