"""Hostile clients of the operators' read-only endpoints (controller/opsapi.py), against a real
controller process beside the rig's Open vSwitch (its switch connected, a pod placed): a node's
token reading what only operators may, no or guessed tokens, the operator's token trying to write,
and fuzzed datapath ids and query strings. Every refusal is a 4xx with a reason, never a 500, and
nothing the controller holds changes."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from attacker import place, register
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from underlay_testbed import Segment

OPERATOR_ROUTES = ("/v1/switches", "/v1/switches/{dpid}/flows", "/v1/switches/{dpid}/flows?state=actual",
                   "/v1/pools", "/v1/nodes", "/v1/pods")


def dpid(segment: Segment) -> int:
    (only,) = segment.controller.trusted
    return only


@pytest.fixture
def placed(segment: Segment) -> Segment:
    """The nodes registered and one pod of n1 placed: something to read, something to steal."""
    register(segment.controller, *segment.hosts.values())
    place(segment.controller, "n1", "web-0")
    return segment


def _state(segment: Segment) -> tuple[object, ...]:
    operator = segment.controller.operator_token
    return tuple(segment.controller.request("GET", path, token=operator)[key]
                 for path, key in (("/v1/pods", "pods"), ("/v1/nodes", "nodes"), ("/v1/placements", "placements")))


@pytest.mark.parametrize("path", OPERATOR_ROUTES)
def test_a_nodes_token_reads_no_operator_endpoint(placed: Segment, path: str) -> None:
    controller = placed.controller
    status, body = controller.raw_request("GET", path.format(dpid=dpid(placed)), token=controller.nodes["n1"].token)
    assert status == 403
    assert body["error"] == ("a node's token may not read operator endpoints: use an operator token "
                             "([api] operator_tokens of the controller's config)")
    assert set(body) == {"error", "epoch"}  # nothing of what was asked


@pytest.mark.parametrize("path", OPERATOR_ROUTES)
def test_no_token_or_a_guessed_one_is_401(placed: Segment, path: str) -> None:
    operator = placed.controller.operator_token
    for token in (None, "guess", operator[:-1], operator + "x", operator.upper() if operator.upper() != operator else "X"):
        status, body = placed.controller.raw_request("GET", path.format(dpid=dpid(placed)), token=token)
        assert status == 401 and body["error"].startswith("missing or invalid operator token"), (token, body)


def test_the_operator_token_writes_nothing(placed: Segment) -> None:
    controller, before = placed.controller, _state(placed)
    operator = controller.operator_token
    pod = {"container_id": "c-evil", "ifname": "eth0", "namespace": "default", "name": "evil", "mode": "macvlan"}
    attempts = [("PUT", "/v1/nodes/n1", {"mac": "02:00:00:00:0e:01", "ip": "198.18.0.60"}),
                ("PUT", "/v1/nodes/evil", {"mac": "02:00:00:00:0e:02", "ip": "198.18.0.61"}),
                ("POST", "/v1/nodes/n1/pods", pod), ("POST", "/v1/nodes/n1/pods:batch", {"pods": [pod]}),
                ("PUT", "/v1/nodes/n1/pods", {"pods": []}), ("DELETE", "/v1/nodes/n1/pods/c-web-0/eth0", None)]
    for method, path, body in attempts:
        status, answer = controller.raw_request(method, path, body, token=operator)
        assert (status, answer["error"]) == (403, f"an operator token is read-only: {method} needs the node's own "
                                                  "token"), (method, path)
    assert _state(placed) == before


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dpid=st.one_of(st.text(min_size=1, max_size=40), st.integers(min_value=-2**70, max_value=2**70).map(str),
                      st.integers(min_value=0, max_value=2**64 + 5).map(hex)),
       state=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["desired", "actual", "diff"])))
def test_fuzzed_dpids_and_states_are_4xx_with_a_reason_or_an_answer(placed: Segment, dpid: str, state: str | None) -> None:
    path = f"/v1/switches/{quote(dpid, safe='')}/flows" + ("" if state is None else f"?state={quote(state, safe='')}")
    status, body = placed.controller.raw_request("GET", path, token=placed.controller.operator_token)
    assert status in (200, 400, 404), (path, status, body)
    if status == 200:
        assert body["state"] in ("desired", "actual", "diff") and body["dpid"] == dpid(placed)
    else:
        assert body["error"].startswith(("dpid: ", "state: ", "switch ", "no such endpoint")), (path, body)


def test_a_repeated_query_key_counts_once_and_the_last_wins(placed: Segment) -> None:
    token = placed.controller.operator_token
    body = placed.controller.request("GET", f"/v1/switches/{dpid(placed)}/flows?state=bogus&state=diff", token=token)
    assert (body["state"], body["in_sync"]) == ("diff", True)
