"""The unix socket the CNI plugin calls, and the CNI spec side of the agent.

The plugin forwards the raw CNI environment and stdin (see `cni.plugin` for the wire format) and
prints back what this side answers: `cni.spec.respond` validates the call, formats the result or
the error exactly as the spec wants, and hands the verb to the `Agent`. So the plugin process
imports nothing costly, and every call is validated by one piece of code.

A thread per connection, so requests for different containers run in parallel (the agent
serialises those of one container). Whatever arrives on a connection (a request too large, cut
short, not the plugin's at all) gets a CNI error as its answer when the peer is still there to
read one, and is logged in one line: a connection never ends in a traceback or a dead thread. The socket is root-only: whoever can reach it can put links
into any namespace, so its directory is 0700 and the socket 0600.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import subprocess
import threading
from pathlib import Path

from cni.plugin import MAX_REQUEST, decode_request
from cni.spec import (DECODE_FAILURE, INTERNAL, INVALID_CONFIG, CniError, Env, JsonObject, error_answer, neutral,
                      respond)
from controller.logs import kv
from node_agent.agent import Agent
from node_agent.metrics import COMMANDS, AgentMetrics
from node_agent.state import pod_label

log = logging.getLogger("underlay.server")
READ_TIMEOUT = 30.0  # the plugin sends its whole request at once; a peer that does not is not one


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(READ_TIMEOUT)
        try:
            status, stdout = self.server.answer(_read_request(sock))
        except CniError as exc:
            log.warning("event=bad-request code=%s msg=%r", exc.code, exc.msg)
            status, stdout = 1, error_answer(exc, b"")
        except OSError as exc:  # the plugin went away while sending: nobody to answer
            log.warning("event=bad-request error=%r", str(exc))
            return
        try:
            sock.sendall(bytes([status]) + stdout)
        except OSError as exc:  # the plugin went away (killed by its runtime's timeout)
            log.warning("event=answer-lost status=%s error=%r", status, str(exc))


def _read_request(sock: socket.socket) -> bytes:
    """The plugin's request: everything until it shuts down its side; CniError past MAX_REQUEST."""
    chunks, size = [], 0
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise CniError(DECODE_FAILURE, f"request to the node agent larger than {MAX_REQUEST} bytes",
                           "the network configuration and CNI_* environment must be smaller")
    return b"".join(chunks)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a node starting many pods at once must not see connection errors

    def __init__(self, path: Path, agent: Agent, *, metrics: AgentMetrics | None = None) -> None:
        self.agent = agent
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)  # a stale socket from a previous run
        old_umask = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old_umask)

    def answer(self, request: bytes) -> tuple[int, bytes]:
        """The plugin's exit status and stdout for one forwarded call (`respond` never raises)."""
        env, stdin = decode_request(request)
        return respond(env, stdin, agent=self.carry_out, ipam=self.run_ipam)

    def handle_error(self, request: object, client_address: object) -> None:
        """A failure the handler did not expect: one log line with its traceback (socketserver's
        default prints it to stderr), and the server goes on serving."""
        log.exception("event=handler-crash")

    def carry_out(self, request: JsonObject) -> JsonObject | None:
        """The verb, with an unexpected failure logged here and reported as CNI error 100; its
        latency and result counted, and told in one line (`_told`)."""
        started, result, error = self.metrics.clock(), None, None
        try:
            result = self.agent.handle(request)
            return result
        except CniError as exc:
            error = exc
            raise
        except Exception as exc:
            log.exception("event=crash command=%s container=%s", request.get("command"), request.get("container_id"))
            error = CniError(INTERNAL, f"node agent failed: {type(exc).__name__}: {exc}")
            raise error from None
        finally:
            seconds = self.metrics.clock() - started
            self.metrics.observe(request.get("command", ""), result=0 if error is None else error.code, seconds=seconds)
            _told(request, result, error, seconds=seconds)

    def run_ipam(self, config: JsonObject, command: str, env: Env, stdin: bytes) -> JsonObject:
        """The IPAM plugin named by `ipam.type`, run in the node's namespace as the runtime would run it."""
        return self.agent.node.call(lambda: run_ipam(config, command, env, stdin))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="cni-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


def _told(request: JsonObject, result: JsonObject | None, error: CniError | None, *, seconds: float) -> None:
    """One line per pod ADD and DEL (at INFO), with its latency and result code (0: success), and
    per failed CHECK, GC or STATUS; a successful one of those (housekeeping, often) at DEBUG."""
    command = request.get("command")
    level = logging.INFO if command in COMMANDS or error is not None else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    args = request.get("args") or {}
    cid = str(request.get("container_id", ""))
    ips = ",".join(ip["address"] for ip in (result or {}).get("ips", ())) or None
    log.log(level, kv("cni", command=command, pod=pod_label(args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME"), cid),
                      container=cid[:12], ifname=request.get("ifname"), result=0 if error is None else error.code,
                      seconds=round(seconds, 4), ips=ips, error=None if error is None else error.msg))


def run_ipam(config: JsonObject, command: str, env: Env, stdin: bytes) -> JsonObject:
    """Exec the IPAM plugin found in CNI_PATH with the call's env and stdin; its result, neutral."""
    ipam_type = config["ipam"]["type"]
    for directory in env.get("CNI_PATH", "").split(os.pathsep):
        path = os.path.join(directory, ipam_type)
        if directory and os.access(path, os.X_OK):
            break
    else:
        raise CniError(INVALID_CONFIG, f"IPAM plugin {ipam_type!r} not found in CNI_PATH")
    proc = subprocess.run([path], input=stdin, capture_output=True,
                          env={"PATH": os.environ.get("PATH", os.defpath), **env, "CNI_COMMAND": command})
    try:
        output = json.loads(proc.stdout or b"{}")
    except ValueError:
        output = {"msg": f"unreadable output {proc.stdout[:200]!r}"}
    if proc.returncode:
        raise CniError(int(output.get("code", INTERNAL)), f"ipam {ipam_type}: {output.get('msg', '')}",
                       output.get("details", proc.stderr.decode(errors="replace")))
    return neutral(output)
