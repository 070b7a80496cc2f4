"""The unix socket the CNI shim calls: one framed JSON request, one framed JSON answer.

A thread per connection, so requests for different containers run in parallel (the agent
serialises those of one container). The socket is root-only: whoever can reach it can put links
into any namespace, so its directory is 0700 and the socket 0600.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from pathlib import Path

from cni.plugin import INTERNAL, CniError, recv_frame, send_frame
from node_agent.agent import Agent

log = logging.getLogger("underlay.server")


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            request = recv_frame(sock)
        except (OSError, ValueError) as exc:
            log.warning("event=bad-request error=%s", exc)
            return
        if request is None:
            return
        send_frame(sock, self.server.answer(request))


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a node starting many pods at once must not see connection errors

    def __init__(self, path: Path, agent: Agent) -> None:
        self.agent = agent
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)  # a stale socket from a previous run
        old_umask = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old_umask)

    def answer(self, request: dict) -> dict:
        try:
            return {"result": self.agent.handle(request)}
        except CniError as exc:
            log.info("event=error command=%s container=%s code=%s msg=%r", request.get("command"),
                     str(request.get("container_id", ""))[:12], exc.code, exc.msg)
            return {"error": exc.as_dict()}
        except Exception as exc:
            log.exception("event=crash command=%s container=%s", request.get("command"), request.get("container_id"))
            return {"error": CniError(INTERNAL, f"node agent failed: {type(exc).__name__}: {exc}").as_dict()}

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="cni-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)
