"""The transfer check itself, on this host's loopback (no root): it passes when the bytes arrive and
says what went wrong when they do not."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Sequence

import pytest

from deploy.lab import transfer


def here(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("proto, size", [("tcp", 3 << 20), ("udp", 16)])
def test_bytes_that_arrive_are_checked(proto: str, size: int) -> None:
    result = transfer.exchange(here, here, "127.0.0.1", proto=proto, size=size, port=free_port())

    assert result.ok and result.size == size and result.proto == proto, result


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_nothing_listening_fails_naming_the_address(proto: str) -> None:
    port = free_port()
    silent = lambda argv, timeout: subprocess.CompletedProcess(list(argv), 0, b"", b"")  # noqa: E731

    result = transfer.exchange(silent, here, "127.0.0.1", proto=proto, port=port, timeout=1)

    assert not result.ok and f"127.0.0.1:{port}" in result.error, result


def test_a_server_that_reads_something_else_fails_the_transfer() -> None:
    """The client compares the server's count and digest with its own."""
    with socket.create_server(("127.0.0.1", 0)) as liar:
        port = liar.getsockname()[1]

        def answer_wrongly() -> None:
            conn, _ = liar.accept()
            with conn:
                while conn.recv(1 << 16):
                    pass
                conn.sendall(b"5 0000\n")

        threading.Thread(target=answer_wrongly, daemon=True).start()
        result = transfer.send_tcp("127.0.0.1", port, 1000, 5)

    assert not result.ok and "the server read 5 0000" in result.error
