"""The controller client against a real HTTP server: error kinds, token, epoch, backoff."""

from __future__ import annotations

import socket

import pytest

from node_agent.controller_client import ControllerClient, PermanentError, TemporaryError, with_backoff


def test_register_allocate_release_and_epoch(controller):
    controller.tokens["n1"] = "t"
    client = ControllerClient(controller.url, "n1", token="t")

    client.register(mac="0a:00:00:00:00:01", ip="198.18.5.10")
    answer = client.allocate({"container_id": "c", "ifname": "eth0", "mode": "macvlan"})

    assert answer["ip"] == "198.18.5.101"
    assert client.epoch == controller.epoch
    assert client.release("c", "eth0") is True
    assert client.release("c", "eth0") is False


def test_error_kinds(controller):
    controller.tokens["n1"] = "t"
    with pytest.raises(PermanentError) as unauthorised:
        ControllerClient(controller.url, "n1", token="wrong").register(mac="0a:00:00:00:00:01", ip=None)
    assert unauthorised.value.status == 401

    client = ControllerClient(controller.url, "n1", token="t")
    with pytest.raises(PermanentError) as unknown:
        client.pods()
    assert unknown.value.status == 404 and "register first" in unknown.value.reason

    client.register(mac="0a:00:00:00:00:01", ip=None)
    controller.refuse.append((503, {"error": "switch not connected"}))
    with pytest.raises(TemporaryError) as busy:
        client.allocate({"container_id": "c", "ifname": "eth0", "mode": "macvlan"})
    assert busy.value.reason == "controller: switch not connected"


def test_unreachable_is_temporary_and_backs_off():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        client = ControllerClient(f"http://127.0.0.1:{port}", "n1", token=None, timeout=1)
        delays: list[float] = []
        with pytest.raises(TemporaryError):
            with_backoff(client.health, attempts=4, first_delay=0.1, sleep=delays.append)
    assert delays == [0.1, 0.2, 0.4]
