"""The controller client against the real controller: error kinds, token, epoch, backoff.

The client runs inside the rig's management namespace, as the agents do: a connection keeps the
namespace of the thread that opened it."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni.spec import IFNAME_RULE
from deploy.lab import netns as lab_netns
from node_agent.controller_client import ControllerClient, PermanentError, TemporaryError
from node_agent.retry import RetryPolicy, retrying
from underlay_testbed import FIRST_POD_IP

pytestmark = pytest.mark.rig


def client_of(segment, node: str = "n1", *, token: str | None = None) -> ControllerClient:
    return ControllerClient(segment.controller.url, node, token=token or segment.controller.nodes[node].token,
                            ca_file=str(segment.controller.ca_file))


def register(client: ControllerClient, segment) -> None:
    host = segment.hosts[client.node]
    client.register(mac=host.mac, ip=host.ip)


def test_register_allocate_release_and_epoch(segment):
    with lab_netns.entered(segment.rig.mgmt_ns):
        client = client_of(segment)
        register(client, segment)
        answer = client.allocate({"container_id": "c", "ifname": "eth0", "namespace": "default", "name": "web-0",
                                  "mode": "macvlan"})

        assert answer["ip"] == FIRST_POD_IP
        assert client.epoch == segment.health()["epoch"]
        assert client.release("c", "eth0") is True
        assert client.release("c", "eth0") is False


def test_error_kinds(segment):
    pod = {"container_id": "c", "ifname": "eth0", "namespace": "default", "name": "web-0", "mode": "macvlan"}
    with lab_netns.entered(segment.rig.mgmt_ns):
        with pytest.raises(PermanentError) as unauthorised:
            register(client_of(segment, token="wrong"), segment)
        assert unauthorised.value.status == 401

        client = client_of(segment)
        with pytest.raises(PermanentError) as unknown:
            client.pods()
        assert unknown.value.status == 404 and "not registered" in unknown.value.reason

        register(client, segment)
        segment.disconnect_switch()
        with pytest.raises(TemporaryError) as busy:
            client.allocate(pod)
        assert busy.value.status == 503 and busy.value.reason.startswith("controller: switch")
        assert busy.value.retry_after == 1.0, "the controller's Retry-After rides on the error"


def test_unreachable_is_temporary_and_backs_off_until_the_deadline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        client = ControllerClient(f"http://127.0.0.1:{port}", "n1", token=None, timeout=1)
        clock, delays = [0.0], []

        def sleep(seconds: float) -> None:
            delays.append(seconds)
            clock[0] += seconds

        with pytest.raises(TemporaryError, match=r"Connection refused.*\(gave up after 4 attempts in 0\.7s\)"):
            retrying(client.health, RetryPolicy(deadline=1.0, first_delay=0.1, max_delay=1.0),
                     now=lambda: clock[0], sleep=sleep, jitter=lambda: 0.9999999)
    assert [round(d, 3) for d in delays] == [0.1, 0.2, 0.4]


def pod_request(n: int, **fields: str) -> dict:
    return {"container_id": f"c{n}", "ifname": "eth0", "namespace": "default", "name": f"web-{n}", "mode": "macvlan",
            **fields}


def test_concurrent_allocations_each_get_their_own_answer(segment):
    ns = segment.rig.mgmt_ns
    with lab_netns.entered(ns):
        client = client_of(segment)
        register(client, segment)
        taken = client.allocate(pod_request(0))["ip"]

    def allocate(n: int) -> str:
        with lab_netns.entered(ns):
            try:
                return client.allocate(pod_request(n, **({"ip": taken} if n == 7 else {})))["ip"]
            except PermanentError as err:
                return f"{err.status} {err.reason}"

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(allocate, range(1, 31)))
    assert answers[6] == f"409 controller: pod default/web-7: {taken} is held by default/web-0"
    others = answers[:6] + answers[7:]
    assert len(set(others)) == 29 and taken not in others
    placed = {p["ip"] for p in segment.controller.request("GET", "/v1/placements", node="n1")["placements"]}
    assert set(others) | {taken} <= placed


def test_a_batch_answers_in_order_with_per_pod_errors(segment):
    with lab_netns.entered(segment.rig.mgmt_ns):
        client = client_of(segment)
        register(client, segment)
        first, bad, conflict = client._allocate_batch(
            [pod_request(1), pod_request(2, ifname="no/slash"), pod_request(3, ip=FIRST_POD_IP)])
    assert first["ip"] == FIRST_POD_IP
    assert isinstance(bad, PermanentError) and bad.status == 400
    assert bad.reason == f"controller: pods[1].ifname: 'no/slash' is not a Linux interface name ({IFNAME_RULE})"
    assert isinstance(conflict, PermanentError) and conflict.status == 409
