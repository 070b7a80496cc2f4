"""Make a TCP port of this namespace reachable at the same address inside another namespace.

The lab's controller runs in the rig's management namespace (where its switch reaches it), and the
Kubernetes API server in the host's (where `kubectl` and the kubelet stand-ins reach it). This
process listens on 127.0.0.1:PORT inside the management namespace (a socket keeps the namespace it
was made in) and copies each connection to 127.0.0.1:PORT here, so one kubeconfig serves both sides
and the API server's certificate (made for 127.0.0.1) checks out. TLS passes through untouched.

`python -m deploy.lab.tcpforward --netns NAME --port PORT [--listen-port PORT2]`: PORT2 (default PORT)
inside; pods that read the API server's address from a manifest (the lab's overlay) find it at a
fixed port, 6443, whatever port the lab's API server took.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Sequence

from deploy.lab import netns

CHUNK = 65536


def listen_in(name: str, port: int) -> socket.socket:
    with netns.entered(name):
        listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def serve(listener: socket.socket, port: int) -> None:
    """Copy every connection `listener` accepts to 127.0.0.1:`port` here."""
    while True:
        inside, _ = listener.accept()
        threading.Thread(target=_bridge, args=(inside, port), daemon=True).start()


def _bridge(inside: socket.socket, port: int) -> None:
    try:
        outside = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        inside.close()
        return
    outside.settimeout(None)
    for sock in (inside, outside):  # forward each piece at once: an HTTP request written in two pieces
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # otherwise waits 40 ms (delayed ACK)
    threading.Thread(target=_copy, args=(outside, inside), daemon=True).start()
    _copy(inside, outside)


def _copy(source: socket.socket, target: socket.socket) -> None:
    """One direction; at its end (EOF or error) both sockets close, which ends the other direction."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.tcpforward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="the namespace to listen in")
    parser.add_argument("--port", type=int, required=True, help="127.0.0.1:PORT there, to 127.0.0.1:PORT here")
    parser.add_argument("--listen-port", type=int, help="the port inside (default: PORT)")
    args = parser.parse_args(argv)
    serve(listen_in(args.netns, args.listen_port or args.port), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
