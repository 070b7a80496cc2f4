"""TEST DOUBLE of the controller's REST API (controller/API.md): a real HTTP server, in-process.

It exists only so the agent's netlink side can be tested while the real controller is being
written: it implements API.md's node, pod and health endpoints minimally (sequential addresses from
one pool, derived MACs, bearer tokens) and programs no switch. Tests that need the switch's
behaviour (ARP answered by the datapath, anti-spoofing) need the real `underlay-controller`; swap
the `controller` fixture for it when it exists. `refuse` makes the next allocations fail the way the
real one does (409 conflict, 503 switch not acknowledging) to test rollback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ControllerDouble:
    def __init__(self, *, subnet: str, tokens: dict[str, str], gateway: str | None = None,
                 first_host: int = 100) -> None:
        self.network = ipaddress.ip_network(subnet)
        self.gateway = gateway
        self.tokens = tokens
        self.epoch = secrets.token_hex(4)
        self.nodes: dict[str, dict] = {}
        self.pods: dict[tuple[str, str, str], dict] = {}  # (node, container, ifname) -> pod
        self.refuse: list[tuple[int, str]] = []  # answers for the next allocations
        self.requests: list[tuple[str, str]] = []
        self._hosts = list(self.network.hosts())[first_host:]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ControllerDouble:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def restart(self) -> None:
        """What a controller restart looks like to an agent: a new epoch, memory of nodes lost."""
        with self._lock:
            self.epoch = secrets.token_hex(4)
            self.nodes.clear()

    def allocations(self, node: str) -> dict[tuple[str, str], dict]:
        with self._lock:
            return {(c, i): p for (n, c, i), p in self.pods.items() if n == node}

    # API.md ---------------------------------------------------------------------------------
    def route(self, method: str, parts: list[str], token: str | None, body: dict) -> tuple[int, dict]:
        if parts == ["v1", "health"]:
            return 200, {"status": "ok", "switches": []}
        if len(parts) < 3 or parts[:2] != ["v1", "nodes"]:
            return 404, {"error": "no such endpoint"}
        node = parts[2]
        if token is None or self.tokens.get(node) != token:
            return 401, {"error": f"token not valid for node {node}"}
        with self._lock:
            if len(parts) == 3 and method == "PUT":
                self.nodes[node] = body
                return 200, {"node": node, "port": None}
            if node not in self.nodes:
                return 404, {"error": f"unknown node {node}: register first"}
            return self._pods(method, node, parts[3:], body)

    def _pods(self, method: str, node: str, rest: list[str], body: dict) -> tuple[int, dict]:
        if rest == ["pods"] and method == "POST":
            return self._allocate(node, body)
        if rest == ["pods"] and method == "GET":
            return 200, {"pods": [p for (n, _, _), p in self.pods.items() if n == node]}
        if rest == ["pods"] and method == "PUT":
            listed = {(p["container_id"], p["ifname"]) for p in body["pods"]}
            mine = {(c, i) for (n, c, i) in self.pods if n == node}
            released = [self.pods.pop((node, c, i)) for c, i in sorted(mine - listed)]
            unknown = [{"container_id": c, "ifname": i} for c, i in sorted(listed - mine)]
            return 200, {"pods": [p for (n, _, _), p in self.pods.items() if n == node], "released": released,
                         "unknown": unknown}
        if len(rest) == 3 and rest[0] == "pods" and method == "DELETE":
            return 200, {"released": self.pods.pop((node, rest[1], rest[2]), None) is not None}
        return 404, {"error": "no such endpoint"}

    def _allocate(self, node: str, body: dict) -> tuple[int, dict]:
        key = (node, body["container_id"], body["ifname"])
        if self.refuse:
            return self.refuse.pop(0)
        if key not in self.pods:
            ip = body.get("ip") or self._free_ip()
            if ip is None:
                return 409, {"error": f"pool {self.network} exhausted"}
            holder = next((p for p in self.pods.values() if p["ip"] == ip), None)
            if holder:
                return 409, {"error": f"{ip} is held by {holder['namespace']}/{holder['name']}"}
            mac = body.get("mac") or _mac(body["container_id"], body["ifname"])
            self.pods[key] = {"container_id": body["container_id"], "ifname": body["ifname"],
                              "namespace": body.get("namespace"), "name": body.get("name"), "ip": ip,
                              "mac": mac, "mode": body["mode"], "pool": "default"}
        pod = self.pods[key]
        routes = [{"dst": "0.0.0.0/0", "gw": self.gateway}] if self.gateway else []
        return 200, {"ip": pod["ip"], "prefix": self.network.prefixlen, "gateway": self.gateway,
                     "routes": routes, "mac": pod["mac"], "pool": "default"}

    def _free_ip(self) -> str | None:
        used = {p["ip"] for p in self.pods.values()}
        return next((str(h) for h in self._hosts if str(h) not in used), None)


def _mac(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"double/{container_id}/{ifname}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0a, *digest[:5]))


def _handler(double: ControllerDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            double.requests.append((self.command, self.path))
            status, answer = double.route(self.command, self.path.strip("/").split("/"), token, body)
            data = json.dumps({**answer, "epoch": double.epoch}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler
