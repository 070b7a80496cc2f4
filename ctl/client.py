"""The controller's operator REST API as seen from underlayctl: where it is, how to prove who we
are, and one GET. The only module of ctl/ that talks to the network.

Every failure becomes a `CtlError` whose message names what failed and says what to do: the
controller unreachable (is it running, is --url right), its certificate not trusted (--ca-file),
the token refused (--token-file, the controller's `[api] operator_tokens`), a 4xx/5xx with the
controller's own reason (it names the switch, pool or node).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
Connect = Callable[[str, int, float], socket.socket]  # (host, port, timeout) -> a connected socket
TOKEN_HELP = ("pass an operator token with --token-file FILE or UNDERLAYCTL_TOKEN "
              "(one of the controller's [api] operator_tokens)")


class CtlError(Exception):
    """Something the person at the terminal can fix; the message says what."""


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    netns: str | None = None  # connect from inside this network namespace (the lab's controller)
    timeout: float = 10.0


class Client:
    def __init__(self, settings: Settings, *, connect: Connect | None = None) -> None:
        parsed = urllib.parse.urlsplit(settings.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CtlError(f"--url {settings.url}: expected https://HOST:PORT (http:// only to a loopback address)")
        self.settings = settings
        self.scheme, self.host = parsed.scheme, parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.base = parsed.path.rstrip("/")
        self._connect = connect or _tcp

    def get(self, path: str) -> Json:
        """GET `path` (e.g. /v1/pools) and its JSON object, or a CtlError that says why not."""
        status, body = self._request(path)
        return body if status == 200 else self._refused(status, body)

    def get_optional(self, path: str) -> Json | None:
        """GET an endpoint a controller may not have yet (e.g. /v1/topology): None when it has not."""
        status, body = self._request(path)
        if status == 404 and str(body.get("error", "")).startswith("no such endpoint"):
            return None
        return body if status == 200 else self._refused(status, body)

    def _refused(self, status: int, body: Json) -> Json:
        reason = str(body.get("error") or f"HTTP {status}")
        if status == 401:
            raise CtlError(f"the controller at {self.settings.url} refused the token: {reason}; {TOKEN_HELP}")
        if status == 403:
            raise CtlError(f"the controller at {self.settings.url} refused: {reason}")
        if status == 503:
            raise CtlError(f"the controller cannot answer now: {reason} (try again shortly)")
        raise CtlError(reason)

    def _request(self, path: str) -> tuple[int, Json]:
        where = self.settings.url
        headers = {"Accept": "application/json"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.settings.timeout)
        try:
            connection.sock = self._socket()
            connection.request("GET", self.base + path, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as err:
            raise CtlError(f"the controller at {where}: its certificate is not trusted ({err.verify_message}): pass the "
                           "CA that signed it with --ca-file (or UNDERLAYCTL_CA_FILE)") from None
        except ssl.SSLError as err:
            raise CtlError(f"the controller at {where}: TLS failed ({err.reason}): does it speak HTTPS there?") from None
        except (OSError, http.client.HTTPException) as err:
            raise CtlError(f"the controller at {where} is unreachable ({_why(err)}): is it running, and is --url "
                           "(or UNDERLAYCTL_URL) its API address?") from None
        finally:
            connection.close()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CtlError(f"{where} answered HTTP {response.status} without a JSON object: is it the underlay "
                           "controller's API?")
        return response.status, body

    def _socket(self) -> socket.socket:
        sock = self._connect(self.host, self.port, self.settings.timeout)
        if self.scheme == "http":
            return sock
        try:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            return context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _tcp(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def in_netns(name: str) -> Connect:
    """Connections made from inside network namespace `name` (needs root): how underlayctl reaches
    a lab's controller, which listens in the lab's management namespace."""
    def connect(host: str, port: int, timeout: float) -> socket.socket:
        from deploy.lab import netns  # pyroute2 and setns: only when asked for

        try:
            return netns.connect_tcp(name, host, port, timeout=timeout)
        except FileNotFoundError:
            raise CtlError(f"network namespace {name} does not exist: is the lab up (underlay-lab status)?") from None
        except PermissionError:
            raise CtlError(f"entering network namespace {name} needs root: run underlayctl as root") from None
    return connect
