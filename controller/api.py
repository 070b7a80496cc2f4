"""The REST API for node agents (controller/API.md) as a plain WSGI application.

Framework-free on purpose: seven routes, JSON in and out, served by any WSGI server (the controller
serves it with cheroot, controller/httpd.py). This module only translates: HTTP and JSON to
`Service` calls, and the two error kinds to status codes. Each request is checked in this order:
route (404/405), token (401), body size (413), body (400), then the service. The body is read
only after the token checked out: the server reads no body ahead of us, so a request without a
valid token is answered 401 with its body never awaited (and its connection closed). What a
body and its fields may hold is `controller.fields`' to say: a malformed one is a 400 naming the
field, whatever the bytes (too deep, not UTF-8, NaN, a NUL in a name), never a 500.

Every response is a JSON object carrying the controller's `epoch`. No traceback ever leaves: an
unexpected exception is logged with its request and answered `500 {"error": "internal error"}`.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, cast

from controller import fields
from controller.agentauth import Authenticator, OperatorTokens, Refused, StaticTokens
from controller.errors import (BadRequest, ConflictError, ControllerError, NotFound, PermanentError, SwitchUnavailable,
                               TemporaryError)
from controller.logs import kv
from controller.metrics import ROUTE_KEY
from controller.opsapi import OperatorRoutes
from controller.service import Attachment, PodRequest, Service
from controller.store import Pod

LOG = logging.getLogger("underlay.api")
MAX_BODY = 1 << 20
MAX_BATCH = 512  # pod requests in one batch: more than a node runs (kubelet's default max-pods is 110)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = Mapping[str, Any]
Json = dict[str, Any]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, reason: str, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, list(headers)


class Auth(enum.Enum):
    OPTIONAL = "optional"  # health: liveness to anyone, the full answer to any node's token
    NODE = "node"  # the token of the node named in the path
    ANY = "any"  # any node's token
    OPERATOR = "operator"  # an operator's token only (controller/opsapi.py); a node's is 403


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Json
    authenticated: bool = True  # False only for an Auth.OPTIONAL route asked without a token
    query: Mapping[str, str] = field(default_factory=dict)  # the query string's keys (last value of each)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    auth: Auth
    path: str  # the pattern as written: the `route` of metrics and logs (bounded, unlike paths)


def _route(method: str, path: str, handler: str, auth: Auth = Auth.NODE) -> Route:
    pattern = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(pattern + r"\Z"), handler, auth, path)


ROUTES = (
    _route("GET", "/v1/health", "health", Auth.OPTIONAL),
    _route("GET", "/v1/ready", "ready", Auth.OPTIONAL),
    _route("PUT", "/v1/nodes/<node>", "put_node"),
    _route("POST", "/v1/nodes/<node>/pods", "add_pod"),
    _route("POST", "/v1/nodes/<node>/pods:batch", "add_pods"),
    _route("GET", "/v1/nodes/<node>/pods", "list_pods"),
    _route("PUT", "/v1/nodes/<node>/pods", "sync_pods"),
    _route("DELETE", "/v1/nodes/<node>/pods/<container_id>/<ifname>", "delete_pod"),
    _route("GET", "/v1/placements", "placements", Auth.ANY),
    _route("GET", "/v1/switches", "list_switches", Auth.OPERATOR),
    _route("GET", "/v1/switches/<dpid>/flows", "switch_flows", Auth.OPERATOR),
    _route("GET", "/v1/pools", "list_pools", Auth.OPERATOR),
    _route("GET", "/v1/nodes", "list_nodes", Auth.OPERATOR),
    _route("GET", "/v1/pods", "list_all_pods", Auth.OPERATOR),
    _route("GET", "/v1/topology", "topology", Auth.OPERATOR),
)


class Api(OperatorRoutes):
    """The WSGI application: `Api(service, tokens=config.tokens)` is a callable(environ, start_response).
    `auth` checks agents' tokens instead of `tokens` (controller/agentauth.py: by the cluster).
    `operators` are operators' tokens: any GET route, nothing else (controller/opsapi.py)."""

    def __init__(self, service: Service, *, tokens: Mapping[str, str] | None = None, auth: Authenticator | None = None,
                 max_body: int = MAX_BODY, operators: Iterable[str] = ()) -> None:
        self.service = service
        self.auth = auth if auth is not None else StaticTokens(tokens or {})
        self.operators = OperatorTokens(operators)
        self.max_body = max_body

    @property
    def epoch(self) -> str:
        """The controller's epoch: the HTTP server puts it in its own answers too (controller/httpd.py)."""
        return str(self.service.epoch)

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        started = time.monotonic()
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        headers: list[tuple[str, str]] = []
        try:
            status, body = self._handle(environ, method, path)
        except HttpError as err:
            status, body, headers = err.status, {"error": err.reason}, err.headers
        except Exception:
            incident = secrets.token_hex(4)
            LOG.exception(kv("internal error", method=method, path=path, incident=incident))
            status, body = 500, {"error": "internal error", "incident": incident}
        body["epoch"] = self.service.epoch
        payload = json.dumps(body).encode()
        level = logging.DEBUG if status < 400 else logging.INFO
        LOG.log(level, kv("request", method=method, path=path, status=status, ms=_ms(started), error=body.get("error")))
        start_response(f"{status} {_REASONS.get(status, '')}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"), *headers,
        ])  # fmt: skip
        return [payload]

    def _handle(self, environ: Environ, method: str, path: str) -> tuple[int, Json]:
        route, params = _match(method, path)
        cast(dict[str, Any], environ)[ROUTE_KEY] = route.path  # WSGI's environ is a dict: the metrics read it
        handler: Callable[[Request], Json] = getattr(self, route.handler)
        try:  # a field's BadRequest (path, body) and the service's errors alike become their status
            params = fields.path_params(params)
            header = environ.get("HTTP_AUTHORIZATION", "")
            authenticated = bool(header) or route.auth is not Auth.OPTIONAL
            if authenticated:
                self._authorize(route, params.get("node"), header)
            body = self._body(environ) if method in ("POST", "PUT") else {}  # only now: see the module's docstring
            request = Request(method, path, params, body, authenticated=authenticated, query=_query(environ))
            return 200, handler(request)
        except ControllerError as err:
            raise _http_error(err) from err

    def _authorize(self, route: Route, node: str | None, header: str) -> None:
        """The authenticator's refusal is a 401 (who are you?) or a 403 (not for this node). An
        operator's token reads (any GET) and writes nothing; a node's token reads no operator route
        (it needs none of them, and a stolen one should tell as little as possible)."""
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if self.operators.holds(token):
            if route.method != "GET":
                raise HttpError(403, f"an operator token is read-only: {route.method} needs the node's own token")
            return
        try:
            self.auth.check(token, node=(node or "") if route.auth is Auth.NODE else None)
        except Refused as err:
            if route.auth is Auth.OPERATOR:
                raise HttpError(401, "missing or invalid operator token: send an operator token "
                                     "([api] operator_tokens of the controller's config)") from err
            raise HttpError(err.status, str(err)) from err
        if route.auth is Auth.OPERATOR:
            raise HttpError(403, "a node's token may not read operator endpoints: use an operator token "
                                 "([api] operator_tokens of the controller's config)")

    def _body(self, environ: Environ) -> Json:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError as err:
            raise HttpError(400, "Content-Length: not a number") from err
        if length > self.max_body:
            raise HttpError(413, f"body: {length} bytes is more than the limit of {self.max_body}")
        try:
            raw = environ["wsgi.input"].read(length) if length > 0 else b""
        except OSError as err:  # the client is too slow (the server's body deadline) or gone
            raise HttpError(408, f"body: not received ({err})") from err
        return fields.decode_body(raw)

    # -- handlers --------------------------------------------------------------------------------

    def health(self, request: Request) -> Json:
        """503 once the store refuses writes: a liveness probe then restarts the controller, which
        reloads what is durable. Without a token, liveness is all it tells: the switches, their
        counters and the store's error are for nodes."""
        failure = self.service.store.failure
        if failure is not None:
            raise HttpError(503, f"{failure}; restart the controller" if request.authenticated else
                            "the store failed: restart the controller")
        if not request.authenticated:
            return {"status": "ok"}
        fabric = self.service.fabric
        return {
            "status": "ok",
            "switches": self.service.switches(),
            "connected": fabric.connected() if hasattr(fabric, "connected") else [],
            "stats": {**(fabric.stats() if hasattr(fabric, "stats") else {}), **self.service.stats()},
        }

    def ready(self, request: Request) -> Json:
        """Readiness without leader election: a single controller is always the one to ask. With
        it, controller/leading.py answers this route (200 only on the leader)."""
        return {"status": "ready"}

    def put_node(self, request: Request) -> Json:
        body = request.body
        view = self.service.register_node(request.params["node"], mac=fields.text(body, "mac"),
                                          ip=fields.text(body, "ip"), ip6=fields.optional(body, "ip6"))
        return {"node": view.node.name, "port": view.port}

    def add_pod(self, request: Request) -> Json:
        return _attachment(self.service.allocate_and_place(request.params["node"], fields.pod_request(request.body)))

    def add_pods(self, request: Request) -> Json:
        """A batch: each pod request gets its own answer, in order; one bad one fails only itself."""
        items = request.body.get("pods")
        if not isinstance(items, list) or not items:
            raise BadRequest("pods: expected a non-empty list of pod requests")
        if len(items) > MAX_BATCH:
            raise BadRequest(f"pods: {len(items)} pod requests, at most {MAX_BATCH} in one batch")
        parsed: list[PodRequest | ControllerError] = []
        for index, item in enumerate(items):
            try:
                parsed.append(fields.pod_request(item, at=f"pods[{index}]."))
            except BadRequest as err:
                parsed.append(err)
        placed = iter(self.service.place_pods(
            request.params["node"], [item for item in parsed if isinstance(item, PodRequest)]))
        return {"results": [_outcome(next(placed) if isinstance(item, PodRequest) else item) for item in parsed]}

    def list_pods(self, request: Request) -> Json:
        return {"pods": [_pod(pod) for pod in self.service.list_pods(request.params["node"])]}

    def sync_pods(self, request: Request) -> Json:
        result = self.service.sync(request.params["node"], fields.attachment_keys(request.body))
        return {
            "pods": [_pod(pod) for pod in result.pods],
            "released": [_pod(pod) for pod in result.released],
            "unknown": [{"container_id": cid, "ifname": ifname} for cid, ifname in result.unknown],
        }

    def delete_pod(self, request: Request) -> Json:
        return {"released": self.service.release(request.params["node"], *fields.attachment_key(request.params))}

    def topology(self, request: Request) -> Json:
        """The fabric: switches (name, connected, link and tree ports), links (state, used, why), the tree."""
        topology = getattr(self.service.fabric, "topology", None)
        if topology is None:
            raise SwitchUnavailable("the fabric's topology is not known yet: the OpenFlow side is not running")
        status: Json = topology()
        return status

    def placements(self, request: Request) -> Json:
        return {"placements": [
            {"ip": p.ip, "mac": p.mac, "node": p.node, "port": p.port, "dpid": p.dpid, "owner": p.owner}
            for p in self.service.placements()
        ]}  # fmt: skip


def _http_error(err: ControllerError) -> HttpError:
    """The one place where the service's error kinds become status codes."""
    if isinstance(err, TemporaryError):
        return HttpError(503, str(err), headers=[("Retry-After", str(max(1, math.ceil(err.delay))))])
    status = 404 if isinstance(err, NotFound) else 409 if isinstance(err, ConflictError) else 400
    assert isinstance(err, PermanentError), err
    return HttpError(status, str(err))


def _outcome(answer: Attachment | ControllerError) -> Json:
    """One pod's answer in a batch: its attachment, or `{"error", "status"}` as it would be alone."""
    if isinstance(answer, ControllerError):
        failed = _http_error(answer)
        return {"error": failed.reason, "status": failed.status}
    return _attachment(answer)


def _match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = []
    for route in ROUTES:
        found = route.pattern.match(path)
        if found:
            if route.method == method:
                return route, found.groupdict()
            allowed.append(route.method)
    if allowed:
        raise HttpError(405, f"{method} is not allowed on {path}", headers=[("Allow", ", ".join(allowed))])
    raise HttpError(404, f"no such endpoint: {path}")


def _query(environ: Environ) -> dict[str, str]:
    """The query string's keys, the last value of each (`?state=actual`)."""
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return dict(pairs)


def _pod(pod: Pod) -> Json:
    return {
        "container_id": pod.container_id, "ifname": pod.ifname, "namespace": pod.namespace, "name": pod.name,
        "ip": pod.ip, "ips": list(pod.ips), "mac": pod.mac, "mode": pod.mode.value, "pool": pod.pool, "uid": pod.uid,
    }  # fmt: skip


def _attachment(attachment: Attachment) -> Json:
    pod = attachment.pod
    return {
        "ip": pod.ip, "prefix": attachment.prefix, "gateway": attachment.gateway,
        "ips": [{"address": f"{a.ip}/{a.prefix}", "gateway": a.gateway, "family": a.family} for a in attachment.addresses],
        "routes": [{"dst": route.dst, "gw": route.gw} for route in attachment.routes],
        "mac": pod.mac, "pool": pod.pool,
    }  # fmt: skip


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.1f}"
