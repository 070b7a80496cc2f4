"""A checked TCP or UDP transfer between two hosts of the lab: the proof that the segment carries
more than pings.

A ping only shows that ICMP passes. TCP and UDP carry checksums that a sender may leave to the
device (offload); a switch that forwards such frames unfinished (Open vSwitch's userspace datapath
reading a veth) delivers them corrupt, and the receiver drops them without a word, so a connection
just times out. So the lab and its tests move real bytes and compare digests:

- TCP: the client sends `size` random bytes and closes its side; the server answers with the count
  and SHA-256 of what it read; the client compares them with its own.
- UDP: the client sends `count` numbered datagrams, each echoed by the server, and checks each echo.

Both sides run as `python3 transfer.py serve|send ...` wherever the host is: through `ip netns exec`,
or inside a User-Mode Linux node through its command channel. The file imports only the standard
library, so it runs by path under any interpreter there. `exchange()` runs both sides and reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PORT = 5201
SIZE = 4 << 20  # a few MB: thousands of segments, windows that grow, retransmits if anything is off
DATAGRAMS = 64
CHUNK = 1 << 16
TIMEOUT = 20.0

# How a side runs on its host: (argv, timeout) -> the finished process (stdout holds its JSON line).
Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[bytes]"]


@dataclass(frozen=True)
class Transfer:
    ok: bool
    proto: str
    size: int  # bytes (TCP) or datagrams (UDP) checked at the far end
    seconds: float
    error: str = ""

    @property
    def mbit_per_s(self) -> float:
        return self.size * 8 / self.seconds / 1e6 if self.proto == "tcp" and self.seconds else 0.0

    def describe(self) -> str:
        what = f"{self.size / (1 << 20):g} MiB" if self.proto == "tcp" else f"{self.size} datagrams"
        return f"{what} ok" if self.ok else f"FAILED ({self.error})"


def exchange(server: Runner, client: Runner, address: str, *, proto: str = "tcp", size: int | None = None,
             port: int = PORT, timeout: float = TIMEOUT) -> Transfer:
    """Serve on one host, send from the other to `address`; the client's verdict, with the server's
    side named when it saw something else."""
    size = size if size is not None else SIZE if proto == "tcp" else DATAGRAMS
    command = [sys.executable, "-I", os.path.abspath(__file__)]
    served: list[subprocess.CompletedProcess[bytes]] = []
    thread = threading.Thread(target=lambda: served.append(
        server([*command, "serve", "--proto", proto, "--port", str(port), "--timeout", str(timeout)], timeout + 10)))
    thread.start()
    try:
        sent = client([*command, "send", address, "--port", str(port), "--proto", proto, "--size", str(size),
                       "--timeout", str(timeout)], timeout + 10)
    finally:
        thread.join(timeout + 15)
    verdict = _verdict(sent)
    if verdict.ok and served and served[0].returncode != 0:
        return Transfer(False, proto, 0, verdict.seconds, f"server: {_verdict(served[0]).error}")
    return verdict


def in_namespace(ns: str) -> Runner:
    """A side that runs in network namespace `ns` of this kernel."""
    def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=timeout)
    return run


def _verdict(proc: subprocess.CompletedProcess[bytes]) -> Transfer:
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        return Transfer(**json.loads(lines[-1]))
    except (IndexError, ValueError, TypeError):
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        return Transfer(False, "?", 0, 0.0, why[-1] if why else f"exit {proc.returncode}, no report")


# -- the two sides, run as a program -----------------------------------------------------------
def serve_tcp(port: int, timeout: float) -> Transfer:
    with _listener(port) as listener:
        listener.settimeout(timeout)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(timeout)
            started, digest, count = time.monotonic(), hashlib.sha256(), 0
            while chunk := conn.recv(CHUNK):
                digest.update(chunk)
                count += len(chunk)
            conn.sendall(f"{count} {digest.hexdigest()}\n".encode())
    return Transfer(True, "tcp", count, time.monotonic() - started)


def send_tcp(address: str, port: int, size: int, timeout: float) -> Transfer:
    conn = _connect(address, port, timeout)
    with conn:
        started, digest, left = time.monotonic(), hashlib.sha256(), size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            digest.update(chunk)
            conn.sendall(chunk)
            left -= len(chunk)
        conn.shutdown(socket.SHUT_WR)
        answer = conn.makefile("rb").readline().decode().split()
    seconds = time.monotonic() - started
    if answer != [str(size), digest.hexdigest()]:
        return Transfer(False, "tcp", size, seconds, f"sent {size} bytes, the server read {' '.join(answer) or 'nothing'}")
    return Transfer(True, "tcp", size, seconds)


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    """Connect, retrying while the server is not listening yet (refused) or a SYN goes unanswered,
    until `timeout`: the two sides start independently."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((address, port), timeout=min(2.0, timeout))
            conn.settimeout(timeout)
            return conn
        except OSError as err:
            if time.monotonic() > deadline:
                raise OSError(f"no TCP connection to {address}:{port} within {timeout:g} s: {err}") from None
            time.sleep(0.1)


def _listener(port: int) -> socket.socket:
    """A TCP listener for both families where the host has IPv6 (--dual-stack labs), else IPv4."""
    try:
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    except (OSError, ValueError):  # no IPv6 in this kernel
        return socket.create_server(("0.0.0.0", port))


def serve_udp(port: int, timeout: float) -> Transfer:
    """Echo every datagram until none came for `timeout` seconds (or the client says it is done)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        sock.settimeout(timeout)
        started, count = time.monotonic(), 0
        while True:
            data, peer = sock.recvfrom(CHUNK)
            if data == b"done":
                return Transfer(True, "udp", count, time.monotonic() - started)
            sock.sendto(data, peer)
            count += 1


def send_udp(address: str, port: int, count: int, timeout: float) -> Transfer:
    """Each datagram until its echo comes back (the first ones wait for the server to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        started, deadline = time.monotonic(), time.monotonic() + timeout
        for number in range(count):
            payload = number.to_bytes(4, "big") + os.urandom(1200)
            while not _echoed(sock, payload, (address, port)):
                if time.monotonic() > deadline:
                    return Transfer(False, "udp", number, time.monotonic() - started,
                                    f"datagram {number} of {count} to {address}:{port} never came back")
        sock.sendto(b"done", (address, port))
        return Transfer(True, "udp", count, time.monotonic() - started)


def _echoed(sock: socket.socket, payload: bytes, peer: tuple[str, int]) -> bool:
    sock.sendto(payload, peer)
    try:
        while True:
            if sock.recv(CHUNK) == payload:
                return True
    except TimeoutError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("serve", "send"))
    parser.add_argument("address", nargs="?", help="send: the server's address")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--size", type=int, help=f"bytes (tcp, default {SIZE}) or datagrams (udp, default {DATAGRAMS})")
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    args = parser.parse_args(argv)
    try:
        if args.role == "serve":
            serve = serve_tcp if args.proto == "tcp" else serve_udp
            result = serve(args.port, args.timeout)
        else:
            if not args.address:
                parser.error("send needs the server's ADDRESS")
            size = args.size if args.size is not None else SIZE if args.proto == "tcp" else DATAGRAMS
            send = send_tcp if args.proto == "tcp" else send_udp
            result = send(args.address, args.port, size, args.timeout)
    except OSError as err:  # a timeout included: the report says what did not happen
        result = Transfer(False, args.proto, 0, 0.0, f"{args.role}: {err}")
    print(json.dumps(result.__dict__), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
