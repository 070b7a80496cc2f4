"""The controller client against the real controller: error kinds, token, epoch, backoff.

The client runs inside the rig's management namespace, as the agents do: a connection keeps the
namespace of the thread that opened it."""

from __future__ import annotations

import socket

import pytest

from deploy.lab import netns as lab_netns
from node_agent.controller_client import ControllerClient, PermanentError, TemporaryError, with_backoff
from underlay_testbed import FIRST_POD_IP

pytestmark = pytest.mark.rig


def client_of(segment, node: str = "n1", *, token: str | None = None) -> ControllerClient:
    return ControllerClient(segment.controller.url, node, token=token or segment.controller.nodes[node].token)


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


def test_unreachable_is_temporary_and_backs_off():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        client = ControllerClient(f"http://127.0.0.1:{port}", "n1", token=None, timeout=1)
        delays: list[float] = []
        with pytest.raises(TemporaryError):
            with_backoff(client.health, attempts=4, first_delay=0.1, sleep=delays.append)
    assert delays == [0.1, 0.2, 0.4]
