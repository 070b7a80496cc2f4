"""The controller's one door to the Kubernetes API: raw JSON over the Python client's connection.

Only this module imports `kubernetes`, and only for what it does well: reading a kubeconfig or
the in-cluster service account (certificates, tokens, exec plugins, token refresh) into a
`Configuration`, and the TLS-configured urllib3 pool built from it. Requests and watches go
through that pool as plain JSON: the client's model objects cost ~10x the memory of the dicts they
come from, and the controller keeps every pod of the cluster in a cache.

Errors become the controller's own (controller/errors.py), so nothing above this module knows
HTTP: 409 AlreadyExists and 409 Conflict are `ConflictError`s (`AlreadyExists`, `Outdated`), 404
is `Missing`, 410 is `Gone` (a watch's resource version was compacted away: relist), 429, 5xx,
timeouts and refused connections are `TemporaryError`s with the server's Retry-After as the delay,
400/422 are `Invalid`, 401/403 are `Forbidden`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from urllib3.response import BaseHTTPResponse
from kubernetes import config as kube_config
from kubernetes.client import Configuration
from kubernetes.client.rest import RESTClientObject

from controller.errors import BadRequest, ConflictError, NotFound, PermanentError, TemporaryError

LOG = logging.getLogger("underlay.kube")

Object = dict[str, Any]
"""A Kubernetes object as the API serves it (parsed JSON)."""

REQUEST_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)
MERGE_PATCH = "application/merge-patch+json"


class AlreadyExists(ConflictError):
    """Create refused: an object of that name exists (for an IPAllocation: someone holds the address)."""


class Outdated(ConflictError):
    """Update or delete refused: the object changed since the resource version we based it on."""


class Missing(NotFound):
    """The object (or its kind: a CRD not installed) does not exist."""


class Gone(TemporaryError):
    """A watch asked for a resource version etcd has compacted away: list again."""


class Invalid(BadRequest):
    """The API server refused the object (schema, CEL rule, malformed request)."""


class Forbidden(PermanentError):
    """Authentication or RBAC refused the request: a deployment problem, not a transient one."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: `Resource("", "v1", "pods")`, `Resource("underlay.io", "v1alpha1",
    "ipallocations")`. Cluster-scoped kinds are used without a namespace."""

    group: str
    version: str
    plural: str

    def path(self, *, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = self.group_path()
        if namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base + (f"/{sub}" if sub else "")

    def group_path(self) -> str:
        """The discovery document of the kind's group version (which resources it serves)."""
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


PODS = Resource("", "v1", "pods")
NAMESPACES = Resource("", "v1", "namespaces")
NODES = Resource("", "v1", "nodes")
EVENTS = Resource("", "v1", "events")
STATEFULSETS = Resource("apps", "v1", "statefulsets")
IPPOOLS = Resource("underlay.io", "v1alpha1", "ippools")
IPALLOCATIONS = Resource("underlay.io", "v1alpha1", "ipallocations")
TOKENREVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews")


class Kube:
    """A connection to one API server. Thread-safe: urllib3's pool hands each thread a connection."""

    def __init__(self, configuration: Configuration, *, pool_size: int = 32) -> None:
        configuration.connection_pool_maxsize = pool_size
        self._configuration = configuration
        self._pool: urllib3.PoolManager = RESTClientObject(configuration).pool_manager
        self.server = configuration.host.rstrip("/")

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, in_cluster: bool = False, context: str | None = None) -> Kube:
        """From a kubeconfig file (None: $KUBECONFIG or ~/.kube/config) or the pod's service account."""
        configuration = Configuration()
        try:
            if in_cluster:
                kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
                )
        except (kube_config.ConfigException, OSError) as err:
            where = "the in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '(default)'}"
            raise PermanentError(f"kubernetes: cannot load {where}: {err}") from err
        return cls(configuration)

    def close(self) -> None:
        self._pool.clear()

    # -- requests --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: urllib3.Timeout = REQUEST_TIMEOUT,
    ) -> Object:
        """One request; the parsed answer, or the error it maps to (see the module docstring)."""
        response = self._send(method, path, query=query, body=body, content_type=content_type, timeout=timeout)
        try:
            data = response.data
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise TemporaryError(f"kubernetes: {method} {path}: {err}", delay=1.0) from err
        finally:
            response.release_conn()
        if response.status >= 300:
            raise error_for(response.status, data, what=f"{method} {path}", retry_after=response.headers.get("Retry-After"))
        return json.loads(data) if data else {}

    def get(self, path: str, *, query: Mapping[str, Any] | None = None) -> Object:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: Object) -> Object:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: Object) -> Object:
        """PUT: fails with `Outdated` if body's metadata.resourceVersion is not the current one."""
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Object, *, timeout: urllib3.Timeout = REQUEST_TIMEOUT) -> Object:
        """A JSON merge patch (RFC 7386): only the keys in `body` change."""
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH, timeout=timeout)

    def delete(self, path: str, *, resource_version: str | None = None) -> Object:
        """Delete, only if still at `resource_version` when given (else `Outdated`)."""
        body: Object = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version is not None:
            body["preconditions"] = {"resourceVersion": resource_version}
        return self.request("DELETE", path, body=body)

    def list_pages(self, path: str, *, query: Mapping[str, Any] | None = None, limit: int = 500) -> Iterator[Object]:
        """A list in pages of `limit` (a whole list of 10,000 pods is ~60 MB of JSON at once).
        Each page is the API's list object; the last one carries the list's resourceVersion."""
        params = dict(query or {}, limit=limit)
        while True:
            page = self.get(path, query=params)
            yield page
            token = page.get("metadata", {}).get("continue")
            if not token:
                return
            params["continue"] = token

    def watch(self, path: str, *, resource_version: str, timeout_seconds: int, query: Mapping[str, Any] | None = None) -> Watch:
        """A watch from `resource_version`, with bookmarks, ended by the server after `timeout_seconds`."""
        params = dict(query or {}, watch="true", resourceVersion=resource_version, allowWatchBookmarks="true",
                      timeoutSeconds=timeout_seconds)  # fmt: skip
        what = f"watch {path}"
        timeout = urllib3.Timeout(connect=5.0, read=timeout_seconds + 30.0)
        response = self._send("GET", path, query=params, body=None, content_type="application/json", timeout=timeout)
        if response.status >= 300:
            data = response.data
            response.release_conn()
            raise error_for(response.status, data, what=what, retry_after=response.headers.get("Retry-After"))
        return Watch(response, what=what)

    def _send(
        self, method: str, path: str, *, query: Mapping[str, Any] | None, body: Any, content_type: str,
        timeout: urllib3.Timeout,
    ) -> BaseHTTPResponse:  # fmt: skip
        url = self.server + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        for setting in self._configuration.auth_settings().values():
            headers[str(setting["key"])] = str(setting["value"])  # type: ignore[index]
        try:
            return self._pool.request(
                method, url, body=None if body is None else json.dumps(body), headers=headers,
                timeout=timeout, preload_content=False, retries=False,
            )  # fmt: skip
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise TemporaryError(f"kubernetes: {method} {path}: {err}", delay=1.0) from err


class Watch:
    """One watch response: iterate its events (dicts with `type` and `object`); `close()` from
    another thread ends the iteration (a reflector being stopped)."""

    def __init__(self, response: BaseHTTPResponse, *, what: str) -> None:
        self._response, self._what = response, what
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Object]:
        try:
            for line in self._response:
                if line.strip():
                    yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            if not self._closed.is_set():
                raise TemporaryError(f"kubernetes: {self._what} broke: {err}", delay=1.0) from err
        finally:
            self._response.release_conn()

    def close(self) -> None:
        self._closed.set()
        try:
            self._response.shutdown()  # unblocks a read in progress in the reflector's thread
        except (ValueError, RuntimeError, OSError):
            pass
        self._response.close()


def error_for(status: int, data: bytes, *, what: str, retry_after: str | None = None) -> Exception:
    """The controller error an API answer means. The message is the API server's own (it names the
    object and the rule), prefixed with the request."""
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    message = f"kubernetes: {what}: {body.get('message') if isinstance(body, dict) and body.get('message') else status}"
    if status == 409:
        return AlreadyExists(message) if reason == "AlreadyExists" else Outdated(message)
    if status == 404:
        return Missing(message)
    if status == 410:
        return Gone(message, delay=0.0)
    if status in (400, 422):
        return Invalid(message)
    if status in (401, 403):
        return Forbidden(message)
    delay = 1.0
    if retry_after and retry_after.isdigit():
        delay = float(retry_after)
    return TemporaryError(message, delay=delay)  # 429, 5xx, anything unexpected: worth a retry


def watch_error(event: Object, *, what: str) -> Exception:
    """An ERROR event inside a watch carries a Status object; 410 means relist."""
    status = event.get("object") or {}
    return error_for(int(status.get("code") or 500), json.dumps(status).encode(), what=what)
