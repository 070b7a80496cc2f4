"""The controller's configuration: a TOML file parsed into a tree of frozen dataclasses.

`load(path)` reads the file, `parse(data)` validates a plain dict (what tomllib returns, or what a
command line merged into it), so flags can override the file by editing the dict before parsing.
Every error names the key it is about (`pools.default.subnet: '10.0.0.0/33' is not a network`):
a config is written by a person, and the message is all they see.

```toml
store = "/var/lib/underlay/store.sqlite"   # or "kubernetes": IPAllocation objects (see [kubernetes])
cookie = 0x55aa000000000000          # or "0x55aa...": its high 16 bits tag every flow (openflow.cookies)
unknown_destination = "normal"       # or "drop"
release_cooldown = 30                # seconds before a released address is handed out again
resync_grace = 60                    # seconds a new allocation is safe from an agent's full sync
allow_global_macs = false            # pods may ask for vendor (globally unique) MACs, not only 02:...
gc_interval = 300                    # with a cluster: seconds between the leak collector's passes
gc_grace = 120                       # with a cluster: seconds a new allocation is safe from it

[openflow]                           # host, port, and optionally ctl_privkey, ctl_cert, ca_certs
audit_interval = 30                  # seconds between reads of a switch's flows that repair hand edits; 0: off
[api]                                # see API_KEYS below: host, port, TLS, connection limits, deadlines
tls_cert = "/etc/underlay/api.crt"
tls_key = "/etc/underlay/api.key"
[metrics]                            # Prometheus metrics (controller/metrics.py); no table: not served
host = "127.0.0.1"                   # the default; another address only when written here
port = 9464
[nodes.n1]                           # token or token_file; optionally dpid and port (pinned uplink),
token = "secret"                     # mac and ip (pinned identity: registering anything else is refused)
[switches."0x1"]
name = "leaf1"                       # optional, for humans (status, logs)
trusted_ports = [1]
[[links]]                            # a cable between two switches: "dpid:port" at each end, both
a = "0x1:5"                          # switches in [switches], no port in two links, none trusted
b = "0x3:1"                          # or a node's pinned port (controller/topology.py)
[kubernetes]                         # with store = "kubernetes" (pools are then IPPool objects)
kubeconfig = "/etc/underlay/kubeconfig"  # or in_cluster = true; optionally context
leader_election = false              # true: replicas elect a leader with the Lease lease_namespace/lease_name
agent_auth = "static"                # or "tokenreview": agents' ServiceAccount tokens checked by the cluster
agent_namespace = "underlay-system"  # with tokenreview: the agents' ServiceAccount
agent_service_account = "underlay-agent"
token_cache = 10                     # seconds a token the cluster accepted is reused without asking again
node_grace = 300                     # store = "kubernetes": seconds a Node may be NotReady before its pods go
node_interval = 30                   # store = "kubernetes": seconds between two looks at the Nodes
[pools.default]
subnet = "198.18.0.0/24"
ranges = ["198.18.0.100-198.18.0.199"]   # default: the whole subnet
gateway = "198.18.0.1"
routes = [{dst = "0.0.0.0/0", gw = "198.18.0.1"}]
exclude = ["198.18.0.150", "198.18.0.160-198.18.0.169"]
default = true                       # implied when there is one pool
[pools.dual]                         # a dual-stack pool: its pods get one address of each family
subnet = "198.18.1.0/24"
subnet6 = "fd00:18:1::/64"           # IPv6: subnet6, ranges6, gateway6 (an IPv6-only pool has no subnet)
ranges6 = ["fd00:18:1::100-fd00:18:1::ffff:ffff"]   # default: the whole subnet6 but its first address
gateway6 = "fd00:18:1::1"
routes = [{dst = "::/0", gw = "fd00:18:1::1"}]       # routes and exclude hold both families
```
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import netaddr

from controller.audit import DEFAULT_INTERVAL as DEFAULT_AUDIT_INTERVAL
from controller.leader import Timing
from controller.selectors import PoolRules
from controller.topology import Link, LinkEnd
from openflow import cookies
from openflow.model import UnknownDestination

DEFAULT_COOKIE = 0x55AA_0000_0000_0000
"""Its high 16 bits are the tag every flow of ours carries (openflow.cookies; the rest of a flow's
cookie names its purpose and owner): set, so it stands out in `ovs-ofctl dump-flows`."""

T = TypeVar("T")
D = TypeVar("D")


class ConfigError(ValueError):
    """The configuration is wrong; the message starts with the key it is about."""


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str


@dataclass(frozen=True)
class Family:
    """One address family of a pool: `ranges` are inclusive (first, last) pairs inside `subnet`."""

    version: int  # 4 or 6
    subnet: str
    ranges: tuple[tuple[str, str], ...]
    gateway: str | None = None


@dataclass(frozen=True)
class PoolConfig:
    """One address pool. `ranges` are inclusive (first, last) pairs, already inside `subnet`; the
    `*6` fields are its IPv6 half. `subnet` is None for an IPv6-only pool. `routes` and `exclude`
    hold both families."""

    name: str
    subnet: str | None
    ranges: tuple[tuple[str, str], ...]
    gateway: str | None = None
    routes: tuple[Route, ...] = ()
    exclude: tuple[str, ...] = ()
    default: bool = False
    cooldown: float | None = None  # seconds a released address waits; None: `release_cooldown`
    rules: PoolRules = PoolRules()  # who may use it; IPPool objects set them, the TOML does not
    subnet6: str | None = None
    ranges6: tuple[tuple[str, str], ...] = ()
    gateway6: str | None = None

    @property
    def families(self) -> tuple[Family, ...]:
        """The pool's families, IPv4 first: a dual-stack pool's pods get one address of each."""
        halves = [Family(4, self.subnet, self.ranges, self.gateway)] if self.subnet is not None else []
        if self.subnet6 is not None:
            halves.append(Family(6, self.subnet6, self.ranges6, self.gateway6))
        return tuple(halves)


@dataclass(frozen=True)
class NodeConfig:
    """A node allowed to talk to the API; `dpid`/`port` pin its uplink instead of learning it,
    `mac`/`ip` pin its identity (it may register only those, and no other node may claim them)."""

    name: str
    token: str = field(repr=False)
    dpid: int | None = None
    port: int | None = None
    mac: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class SwitchConfig:
    dpid: int
    trusted_ports: tuple[int, ...] = ()
    name: str | None = None


@dataclass(frozen=True)
class OpenFlowConfig:
    host: str = "127.0.0.1"
    port: int = 6653
    ctl_privkey: str | None = None
    ctl_cert: str | None = None
    ca_certs: str | None = None
    audit_interval: float = DEFAULT_AUDIT_INTERVAL  # seconds (controller/audit.py); 0: no audit


@dataclass(frozen=True)
class ApiLimits:
    """What one client, and all of them, may take of the REST API (controller/httpgate.py)."""

    max_connections: int = 1024
    max_connections_per_peer: int = 64
    threads: int = 32
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_body: int = 1 << 20


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 6680
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    plaintext: bool = False
    limits: ApiLimits = ApiLimits()
    operator_tokens: tuple[str, ...] = field(default=(), repr=False)  # read-only REST (GET) for underlayctl

    @property
    def scheme(self) -> str:
        return "http" if self.plaintext else "https"


API_KEYS = """\
[api] keys of the config file:
  host = "127.0.0.1"       the one address the REST API listens on (an IP address)
  port = 6680
  tls_cert, tls_key        PEM files: the API speaks HTTPS (agents check the certificate with --ca-file)
  tls_client_ca            optional PEM file: agents must then present a certificate it signed
  plaintext = false        true: plain HTTP instead of TLS, allowed only on a loopback host
  max_connections = 1024   connections open at once, from all clients
  max_connections_per_peer = 64
                           connections open at once from one client address; more are closed at accept
  threads = 32             requests served at once (a connection takes a thread only once its
                           request head is complete)
  header_timeout = 10      seconds for a request head to arrive (a new connection, or a request's first byte)
  body_timeout = 10        seconds for a body to arrive once the head is in, and for a client to take an answer
  idle_timeout = 30        seconds a keep-alive connection may wait between requests
  max_body = 1048576       bytes; a larger body is refused (413) before it is read
  operator_tokens = []     bearer tokens of operators (underlayctl): every GET, nothing else
  operator_token_file      a file of operator tokens, one a line (read at start, with operator_tokens)
"""


@dataclass(frozen=True)
class MetricsConfig:
    """Where Prometheus scrapes the controller (controller/metrics.py): loopback unless written out."""

    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class KubernetesConfig:
    """How to reach the Kubernetes API: a kubeconfig (None: $KUBECONFIG, then ~/.kube/config) or
    the service account of the pod the controller runs in."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    leader_election: bool = False  # two replicas: the Lease's holder leads (controller/leader.py)
    lease_name: str = "underlay-controller"
    lease_namespace: str = "underlay-system"
    lease_duration: float = 15.0  # seconds, Kubernetes' own defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    agent_auth: str = "static"  # or TOKENREVIEW
    agent_namespace: str = "underlay-system"
    agent_service_account: str = "underlay-agent"
    token_cache: float = 10.0
    node_grace: float = 300.0
    node_interval: float = 30.0

    @property
    def tokenreview(self) -> bool:
        return self.agent_auth == TOKENREVIEW


TOKENREVIEW = "tokenreview"


KUBERNETES_STORE = "kubernetes"
"""`store = "kubernetes"`: the store is the API (IPAllocation objects), pools are IPPool objects."""


@dataclass(frozen=True)
class Config:
    store: str
    openflow: OpenFlowConfig = OpenFlowConfig()
    api: ApiConfig = ApiConfig()
    cookie: int = DEFAULT_COOKIE
    unknown_destination: UnknownDestination = UnknownDestination.NORMAL
    release_cooldown: float = 30.0
    resync_grace: float = 60.0
    allow_global_macs: bool = False
    gc_interval: float = 300.0
    gc_grace: float = 120.0
    nodes: Mapping[str, NodeConfig] = field(default_factory=dict)
    switches: Mapping[int, SwitchConfig] = field(default_factory=dict)
    pools: Mapping[str, PoolConfig] = field(default_factory=dict)
    links: tuple[Link, ...] = ()  # between switches, in the config's order
    kubernetes: KubernetesConfig | None = None  # set by a [kubernetes] table or store = "kubernetes"
    metrics: MetricsConfig | None = None  # no [metrics] table: no metrics listener

    @property
    def default_pool(self) -> PoolConfig:
        return next(pool for pool in self.pools.values() if pool.default)

    @property
    def tokens(self) -> dict[str, str]:
        return {name: node.token for name, node in self.nodes.items()}


def load(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a TOML config; relative token files are relative to the config file.
    `overrides` (the command line's) replace the file's keys, a table's keys one by one. Every
    error names the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err
    for key, value in (overrides or {}).items():
        table = data.get(key)
        data[key] = {**table, **value} if isinstance(value, Mapping) and isinstance(table, dict) else value
    try:
        return parse(data, base=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def parse(data: Mapping[str, Any], *, base: Path = Path(".")) -> Config:
    """Validate a config dict. Unknown keys are errors: a typo must not silently mean a default."""
    top = _Table(data, "")
    config = Config(
        store=top.get("store", _str),
        openflow=_openflow(top.table("openflow")),
        api=_api(top.table("api"), base=base),
        cookie=top.get("cookie", _cookie, DEFAULT_COOKIE),
        unknown_destination=top.get("unknown_destination", _unknown_destination, UnknownDestination.NORMAL),
        release_cooldown=top.get("release_cooldown", _seconds, 30.0),
        resync_grace=top.get("resync_grace", _seconds, 60.0),
        allow_global_macs=top.get("allow_global_macs", _bool, False),
        gc_interval=top.get("gc_interval", _seconds, 300.0),
        gc_grace=top.get("gc_grace", _seconds, 120.0),
        nodes=top.each("nodes", lambda t, name: _node(t, name, base=base, reviewed=_reviewed(data))),
        switches={sw.dpid: sw for sw in top.each("switches", _switch).values()},
        pools=_default_pool(top.each("pools", _pool)),
        kubernetes=_kubernetes(top, base=base),
        metrics=_metrics(top.table("metrics")) if "metrics" in data else None,
    )
    config = replace(config, links=_links(top, config))
    top.done()
    _check_nodes(config)
    _check_pools_disjoint(config.pools.values())
    _check_api_tls(config.api)  # last: a config wrong elsewhere says so first
    return config


class _Table:
    """One TOML table being read: tracks its dotted name and which keys were used."""

    def __init__(self, data: object, name: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name}: expected a table, got {data!r}")
        self.data: Mapping[str, Any] = data
        self.name = name
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, convert: Callable[[Any], T], *default: D) -> T | D:
        """The value at `key` through `convert`; a converter's ValueError/TypeError names the key."""
        self.seen.add(key)
        if key not in self.data:
            if default:
                return default[0]
            raise ConfigError(f"{self.key(key)}: missing")
        value = self.data[key]
        try:
            return convert(value)
        except (ValueError, TypeError, netaddr.AddrFormatError) as err:
            reason = _reason(err, value, convert)
            raise ConfigError(self.key(key) + ("" if reason.startswith("[") else ": ") + reason) from err

    def table(self, key: str) -> _Table:
        self.seen.add(key)
        return _Table(self.data.get(key, {}), self.key(key))

    def each(self, key: str, build: Callable[[_Table, str], T]) -> dict[str, T]:
        """Build every sub-table of `key` (nodes, switches, pools), each named by its key."""
        outer = self.table(key)
        built = {}
        for name in outer.data:
            inner = outer.table(name)
            built[name] = build(inner, name)
            inner.done()
        return built

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


class _Reason(ValueError):
    """A converter's own explanation, used verbatim after the key."""


def _describe(convert: Callable[..., Any]) -> str:
    """What a converter accepts: its docstring, by convention."""
    return (convert.__doc__ or "valid").strip()


def _reason(err: Exception, value: Any, convert: Callable[..., Any]) -> str:
    if isinstance(err, _Reason | ConfigError):
        return str(err)
    return f"{value!r} is not {_describe(convert)}"


def _typed(kind: type[T]) -> Callable[[Any], T]:
    def check(value: Any) -> T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(value)
        return value

    check.__doc__ = {str: "a string", int: "an integer", bool: "a boolean"}[kind]
    return check


_str, _int, _bool = _typed(str), _typed(int), _typed(bool)


def _cookie(value: Any) -> int:
    """a 64-bit cookie (an integer or a "0x..." string)"""
    cookie = int(value, 0) if isinstance(value, str) else _int(value)
    if not 0 < cookie < 2**64:
        raise _Reason(f"{value!r} is not a non-zero 64-bit integer")
    if not cookies.tag_of(cookie):
        raise _Reason(f"{value!r} has no tag: its high 16 bits mark the flows that are ours (the rest names "
                      "each flow's purpose and owner), and a zero tag would claim every untagged flow: "
                      f"use e.g. {DEFAULT_COOKIE:#x}")
    return cookie


def _unknown_destination(value: Any) -> UnknownDestination:
    """one of "normal", "drop" """
    return UnknownDestination(value)


def _seconds(value: Any) -> float:
    """a number of seconds (>= 0)"""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise TypeError(value)
    return float(value)


def _count(value: Any) -> int:
    """a positive integer"""
    if _int(value) < 1:
        raise ValueError(value)
    return int(value)


def _positive(value: Any) -> float:
    """a number of seconds (> 0)"""
    if _seconds(value) <= 0:
        raise ValueError(value)
    return float(value)


def _ip(value: Any) -> str:
    """an IP address"""
    return str(ipaddress.ip_address(_str(value)))


def _port(value: Any) -> int:
    """a port number (1-65535)"""
    if not 0 < _int(value) < 65536:
        raise ValueError(value)
    return int(value)


def _ofport(value: Any) -> int:
    """an OpenFlow port number (1-65279)"""
    if not 0 < _int(value) < 0xFF00:
        raise ValueError(value)
    return int(value)


def _dpid(value: Any) -> int:
    """a datapath id (an integer or a "0x..." string)"""
    dpid = int(value, 0) if isinstance(value, str) else _int(value)
    if not 0 <= dpid < 2**64:
        raise ValueError(value)
    return dpid


def _ipv4(value: Any) -> netaddr.IPAddress:
    """an IPv4 address"""
    address = netaddr.IPAddress(_str(value))
    if address.version != 4:
        raise ValueError(value)
    return address


def _mac(value: Any) -> str:
    """a unicast MAC address"""
    raw = netaddr.EUI(_str(value), version=48).packed
    if raw[0] & 0x01 or not any(raw):
        raise ValueError(value)
    return ":".join(f"{byte:02x}" for byte in raw)


def _any_ip(value: Any) -> netaddr.IPAddress:
    """an IP address"""
    return netaddr.IPAddress(str(ipaddress.ip_address(_str(value))))


def _any_network(value: Any) -> netaddr.IPNetwork:
    """a network"""
    text = _str(value)
    if "/" not in text:
        raise ValueError(value)
    network = netaddr.IPNetwork(str(ipaddress.ip_network(text, strict=False)))
    if netaddr.IPAddress(text.partition("/")[0]) != network.network:
        raise _Reason(f"{value!r} has host bits set (did you mean {network.cidr}?)")
    return network


def _network(value: Any) -> netaddr.IPNetwork:
    """a network"""
    network = _any_network(value)
    if network.version != 4:
        raise _Reason(f"{value!r} is an IPv6 network: write it as subnet6")
    return network


def _network6(value: Any) -> netaddr.IPNetwork:
    """a network"""
    network = _any_network(value)
    if network.version != 6:
        raise _Reason(f"{value!r} is an IPv4 network: write it as subnet")
    if network in _MAPPED or _MAPPED in network:
        raise _Reason(f"{value!r} holds IPv4-mapped addresses (::ffff:0:0/96): IPv4 goes in subnet")
    return network


_MAPPED = netaddr.IPNetwork("::ffff:0:0/96")


def _range(value: Any) -> netaddr.IPRange:
    """an address range "first-last" of one family"""
    first, sep, last = _str(value).partition("-")
    if not sep:
        raise ValueError(value)
    low, high = _any_ip(first.strip()), _any_ip(last.strip())
    if low.version != high.version:
        raise _Reason(f"{value!r} mixes IPv4 and IPv6")
    if low > high:
        raise _Reason(f"{value!r} ends before it starts")
    return netaddr.IPRange(low, high)


def _exclusion(value: Any) -> netaddr.IPSet:
    """an address, a "first-last" range or a network"""
    text = _str(value)
    if "-" in text:
        return netaddr.IPSet(_range(text))
    return netaddr.IPSet([_any_network(text) if "/" in text else _any_ip(text)])


def _list(item: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def convert(values: Any) -> tuple[T, ...]:
        if not isinstance(values, list):
            raise TypeError(values)
        converted = []
        for index, value in enumerate(values):
            try:
                converted.append(item(value))
            except (ValueError, TypeError, netaddr.AddrFormatError) as err:
                raise _Reason(f"[{index}]: {_reason(err, value, item)}") from err
        return tuple(converted)

    convert.__doc__ = f"a list of {_describe(item)}"
    return convert


def _openflow(table: _Table) -> OpenFlowConfig:
    defaults = OpenFlowConfig()
    tls = {key: table.get(key, _str, None) for key in ("ctl_privkey", "ctl_cert", "ca_certs")}
    if (tls["ctl_privkey"] is None) != (tls["ctl_cert"] is None):
        raise ConfigError(f"{table.name}: ctl_privkey and ctl_cert go together")
    config = OpenFlowConfig(
        host=table.get("host", _str, defaults.host), port=table.get("port", _port, defaults.port), **tls,
        audit_interval=table.get("audit_interval", _seconds, defaults.audit_interval),
    )
    table.done()
    return config


def _api(table: _Table, *, base: Path) -> ApiConfig:
    defaults = ApiConfig()
    files = {key: table.get(key, _str, None) for key in ("tls_cert", "tls_key", "tls_client_ca")}
    limits: dict[str, Any] = {key: table.get(key, _count if isinstance(value, int) else _positive, value)
                              for key, value in ApiLimits().__dict__.items()}  # an int default wants an int
    config = ApiConfig(
        host=table.get("host", _ip, defaults.host), port=table.get("port", _port, defaults.port),
        **{key: None if name is None else _readable(base / name, key=table.key(key)) for key, name in files.items()},
        plaintext=table.get("plaintext", _bool, False), limits=ApiLimits(**limits),
        operator_tokens=_operator_tokens(table, base=base),
    )
    table.done()
    return config


def _operator_tokens(table: _Table, *, base: Path) -> tuple[str, ...]:
    """`operator_tokens` and the lines of `operator_token_file`: operators' read-only credentials."""
    tokens = list(table.get("operator_tokens", _list(_str), ()))
    path = table.get("operator_token_file", _str, None)
    if path is not None:
        text = _read_token(base / path, key=table.key("operator_token_file"))
        tokens += [line.strip() for line in text.splitlines() if line.strip()]
        if not tokens:
            raise ConfigError(f"{table.key('operator_token_file')}: {base / path} holds no token")
    if any(not token or token != token.strip() for token in tokens):
        raise ConfigError(f"{table.key('operator_tokens')}: a token is empty or has surrounding whitespace")
    return tuple(dict.fromkeys(tokens))


def _metrics(table: _Table) -> MetricsConfig:
    config = MetricsConfig(host=table.get("host", _ip, MetricsConfig.host), port=table.get("port", _port, MetricsConfig.port))
    table.done()
    return config


def _kubernetes(top: _Table, *, base: Path) -> KubernetesConfig | None:
    if "kubernetes" not in top.data and top.data.get("store") != KUBERNETES_STORE:
        top.seen.add("kubernetes")
        return None
    table = top.table("kubernetes")
    kubeconfig = table.get("kubeconfig", _str, None)
    config = KubernetesConfig(
        kubeconfig=None if kubeconfig is None else str(base / kubeconfig),
        context=table.get("context", _str, None),
        in_cluster=table.get("in_cluster", _bool, False),
        **_leader_election(table, store=top.data.get("store")),
        agent_auth=table.get("agent_auth", _agent_auth, "static"),
        agent_namespace=table.get("agent_namespace", _str, KubernetesConfig.agent_namespace),
        agent_service_account=table.get("agent_service_account", _str, KubernetesConfig.agent_service_account),
        token_cache=table.get("token_cache", _seconds, KubernetesConfig.token_cache),
        node_grace=table.get("node_grace", _seconds, KubernetesConfig.node_grace),
        node_interval=table.get("node_interval", _positive, KubernetesConfig.node_interval),
    )
    if config.in_cluster and (config.kubeconfig or config.context):
        raise ConfigError(f"{table.name}: in_cluster = true takes no kubeconfig or context")
    table.done()
    return config


def _leader_election(table: _Table, *, store: object) -> dict[str, Any]:
    """The election's keys; the three periods checked together (a leader must give up in time).
    Replicas share their state only through the API: an election needs the Kubernetes store."""
    defaults = KubernetesConfig()
    keys: dict[str, Any] = {"leader_election": table.get("leader_election", _bool, False)}
    if keys["leader_election"] and store != KUBERNETES_STORE:
        raise ConfigError(f"{table.key('leader_election')}: needs store = \"{KUBERNETES_STORE}\" (replicas share "
                          f"their state through the API), and store is {store!r}")
    keys.update({key: table.get(key, _str, getattr(defaults, key)) for key in ("lease_name", "lease_namespace")})
    keys.update({key: table.get(key, _positive, getattr(defaults, key))
                 for key in ("lease_duration", "renew_deadline", "retry_period")})
    try:
        Timing(keys["lease_duration"], keys["renew_deadline"], keys["retry_period"])
    except ValueError as err:
        raise ConfigError(f"{table.name}: {err}") from err
    return keys
def _agent_auth(value: Any) -> str:
    """one of "static", "tokenreview" """
    if value not in ("static", TOKENREVIEW):
        raise ValueError(value)
    return str(value)


def _check_api_tls(api: ApiConfig) -> None:
    """TLS unless plain HTTP is asked for, and plain HTTP only on loopback: a token sent in clear
    on the segment is a token any pod can read."""
    if (api.tls_cert is None) != (api.tls_key is None):
        raise ConfigError("api: tls_cert and tls_key go together")
    if api.plaintext and api.tls_cert is not None:
        raise ConfigError("api.plaintext: true, but tls_cert is set too: choose TLS or plain HTTP")
    if api.plaintext and not ipaddress.ip_address(api.host).is_loopback:
        raise ConfigError(f"api.plaintext: plain HTTP is allowed only on a loopback address, and api.host is "
                          f"{api.host}: set tls_cert and tls_key instead")
    if api.tls_client_ca is not None and api.plaintext:
        raise ConfigError("api.tls_client_ca: needs TLS, and plaintext is true")


def check_servable(config: Config) -> None:
    """What the controller needs beyond what `parse` checks (a config for the IPAM alone needs no
    [api]): an API with either TLS or, on loopback, plain HTTP asked for by name."""
    if not config.api.plaintext and config.api.tls_cert is None:
        raise ConfigError("api: set tls_cert and tls_key (the API speaks HTTPS), or plaintext = true for plain HTTP "
                          "on a loopback address")


def _readable(path: Path, *, key: str) -> str:
    try:
        path.open("rb").close()
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror}") from err
    return str(path)


def _reviewed(data: Mapping[str, Any]) -> bool:
    """Agents are authenticated by the cluster (`[kubernetes] agent_auth = "tokenreview"`)."""
    kubernetes = data.get("kubernetes")
    return isinstance(kubernetes, Mapping) and kubernetes.get("agent_auth") == TOKENREVIEW


def _node(table: _Table, name: str, *, base: Path, reviewed: bool = False) -> NodeConfig:
    """A node's token, and what is pinned of it; with `reviewed`, its pins only (no token)."""
    token = table.get("token", _str, None)
    token_file = table.get("token_file", _str, None)
    if reviewed and (token, token_file) != (None, None):
        raise ConfigError(f"{table.name}: kubernetes.agent_auth is \"tokenreview\": agents show their ServiceAccount "
                          "token, remove token/token_file")
    if not reviewed and (token is None) == (token_file is None):
        raise ConfigError(f"{table.name}: needs exactly one of token, token_file")
    if token_file is not None:
        token = _read_token(base / token_file, key=table.key("token_file"))
    if not token and not reviewed:
        raise ConfigError(f"{table.key('token')}: empty")
    dpid, port = table.get("dpid", _dpid, None), table.get("port", _ofport, None)
    if port is not None and dpid is None:
        raise ConfigError(f"{table.key('port')}: needs nodes.{name}.dpid too")
    ip = table.get("ip", _ipv4, None)
    return NodeConfig(name=name, token=token or "", dpid=dpid, port=port, mac=table.get("mac", _mac, None),
                      ip=None if ip is None else str(ip))


def _read_token(path: Path, *, key: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror}") from err


def _switch(table: _Table, name: str) -> SwitchConfig:
    try:
        dpid = _dpid(name)
    except ValueError as err:
        raise ConfigError(f"{table.name}: {name!r} is not a datapath id") from err
    return SwitchConfig(dpid=dpid, trusted_ports=table.get("trusted_ports", _list(_ofport), ()),
                        name=table.get("name", _str, None))


def _link_end(value: Any) -> LinkEnd:
    """a "dpid:port" string (e.g. "0x1:5")"""
    end = LinkEnd.parse(_str(value))
    _dpid(end.dpid), _ofport(end.port)
    return end


def _links(top: _Table, config: Config) -> tuple[Link, ...]:
    """The `[[links]]` tables. Each end on a configured switch, on a port no other link, trusted port
    or pinned node port uses: a link port is unchecked like a trusted port but carries no node."""
    top.seen.add("links")
    raw = top.data.get("links", [])
    if not isinstance(raw, list):
        raise ConfigError("links: expected an array of tables [[links]] with a and b")
    pinned = {(node.dpid, node.port): node.name for node in config.nodes.values() if node.port is not None}
    used: dict[LinkEnd, str] = {}
    links = []
    for index, data in enumerate(raw):
        table = _Table(data, f"links[{index}]")
        ends = table.get("a", _link_end), table.get("b", _link_end)
        table.done()
        if ends[0].dpid == ends[1].dpid:
            raise ConfigError(f"{table.name}: a and b are both on switch {ends[0].dpid:#x}: a link joins two switches")
        for name, end in zip("ab", ends):
            key, switch = table.key(name), config.switches.get(end.dpid)
            if switch is None:
                raise ConfigError(f"{key}: switch {end.dpid:#x} is not configured (add [switches.\"{end.dpid:#x}\"])")
            if end in used:
                raise ConfigError(f"{key}: port {end} is already {used[end]}")
            if end.port in switch.trusted_ports:
                raise ConfigError(f"{key}: port {end} is a trusted port of switch {end.dpid:#x}")
            if (end.dpid, end.port) in pinned:
                raise ConfigError(f"{key}: port {end} is node {pinned[end.dpid, end.port]}'s pinned port")
            used[end] = key
        links.append(Link(*ends))
    return tuple(links)


def _route(value: Any) -> Route:
    """a route table {dst = "net", gw = "address"}"""
    table = _Table(value, "")
    dst, gw = table.get("dst", _any_network), table.get("gw", _any_ip)
    if dst.version != gw.version:
        raise _Reason(f"gw {gw} is not of the family of dst {dst.cidr}")
    table.done()
    return Route(dst=str(dst.cidr), gw=str(gw))


def _pool(table: _Table, name: str) -> PoolConfig:
    subnet, subnet6 = table.get("subnet", _network, None), table.get("subnet6", _network6, None)
    if subnet is None and subnet6 is None:
        raise ConfigError(f"{table.key('subnet')}: missing (a pool needs subnet, subnet6 or both)")
    v4 = _family(table, subnet, keys=("subnet", "ranges", "gateway"))
    v6 = _family(table, subnet6, keys=("subnet6", "ranges6", "gateway6"))
    routes = table.get("routes", _list(_route), ())
    for route in routes:
        family = {4: v4, 6: v6}[netaddr.IPAddress(route.gw).version]
        if family is None or netaddr.IPAddress(route.gw) not in netaddr.IPNetwork(family.subnet):
            raise ConfigError(f"{table.key('routes')}: gateway {route.gw} of {route.dst} is not in "
                              f"{_subnet_named(family, route.gw)}")
    exclude = table.get("exclude", _list(_exclusion), ())
    return PoolConfig(
        name=name,
        subnet=None if v4 is None else v4.subnet,
        ranges=() if v4 is None else v4.ranges,
        gateway=None if v4 is None else v4.gateway,
        routes=routes,
        exclude=tuple(str(cidr) for excluded in exclude for cidr in excluded.iter_cidrs()),
        default=table.get("default", _bool, False),
        subnet6=None if v6 is None else v6.subnet,
        ranges6=() if v6 is None else v6.ranges,
        gateway6=None if v6 is None else v6.gateway,
    )


def _family(table: _Table, subnet: netaddr.IPNetwork | None, *, keys: tuple[str, str, str]) -> Family | None:
    """One family's subnet, ranges and gateway. An IPv6 subnet's first address (the subnet-router
    anycast) is never a host's; IPv4 loses its network and broadcast addresses."""
    _, ranges_key, gateway_key = keys
    if subnet is None:
        for key in keys[1:]:
            if key in table.data:
                table.seen.add(key)
                raise ConfigError(f"{table.key(key)}: given without {keys[0]}")
        return None
    never = [subnet.network] if subnet.version == 6 else [subnet.network, subnet.broadcast or subnet.network]
    usable = netaddr.IPSet([subnet]) - netaddr.IPSet(never)
    whole = netaddr.IPRange(subnet.first + (subnet.version == 6 and subnet.size > 1), subnet.last)
    ranges = table.get(ranges_key, _list(_range), (whole,))
    for text, iprange in zip(table.data.get(ranges_key, ()), ranges):
        if iprange not in subnet:
            raise ConfigError(f"{table.key(ranges_key)}: {text!r} is not inside {subnet}")
    gateway = table.get(gateway_key, _any_ip, None)
    if gateway is not None and gateway not in usable:
        raise ConfigError(f"{table.key(gateway_key)}: {gateway} is not a host address of {subnet}")
    return Family(
        subnet.version, str(subnet.cidr),
        tuple((str(netaddr.IPAddress(r.first)), str(netaddr.IPAddress(r.last))) for r in ranges),
        None if gateway is None else str(gateway),
    )  # fmt: skip


def _subnet_named(family: Family | None, address: str) -> str:
    if family is not None:
        return family.subnet
    return "a subnet of the pool (it has no " + ("subnet6)" if ":" in address else "subnet)")


def parse_pool(name: str, data: Mapping[str, Any], *, where: str) -> PoolConfig:
    """One pool from a plain dict of the keys of a `[pools.<name>]` table (what an IPPool object's
    spec is translated to); error messages start with `where`."""
    table = _Table(data, where)
    pool = _pool(table, name)
    table.done()
    return pool


def _default_pool(pools: dict[str, PoolConfig]) -> dict[str, PoolConfig]:
    """Exactly one pool is the default; a lone pool is the default without saying so."""
    defaults = [name for name, pool in pools.items() if pool.default]
    if len(defaults) > 1:
        raise ConfigError(f"pools: more than one default ({', '.join(defaults)})")
    if not defaults and len(pools) == 1:
        (name, pool), = pools.items()
        return {name: PoolConfig(**{**pool.__dict__, "default": True})}
    if not defaults and pools:
        raise ConfigError("pools: several pools and none has default = true")
    return pools


def _check_nodes(config: Config) -> None:
    """A pinned node port must not also be a trusted port: anti-spoofing would not apply to it. A
    pinned identity is one node's, and a pinned IP is no pool's to hand out or route through."""
    seen: dict[str, str] = {}
    for node in config.nodes.values():
        switch = config.switches.get(node.dpid) if node.dpid is not None else None
        if switch is not None and node.port in switch.trusted_ports:
            raise ConfigError(f"nodes.{node.name}.port: {node.port} is a trusted port of switch {node.dpid:#x}")
        for key, value in (("mac", node.mac), ("ip", node.ip)):
            if value is not None and seen.setdefault(value, node.name) != node.name:
                raise ConfigError(f"nodes.{node.name}.{key}: {value} is pinned to node {seen[value]} too")
        if node.ip is not None:
            _check_pinned_ip(node, node.ip, config.pools.values())


def _check_pinned_ip(node: NodeConfig, ip: str, pools: Iterable[PoolConfig]) -> None:
    address = netaddr.IPAddress(ip)
    for pool in pools:
        if node.ip == pool.gateway or any(route.gw == node.ip for route in pool.routes):
            raise ConfigError(f"nodes.{node.name}.ip: {node.ip} is a gateway of pool {pool.name}")
        if address in allocatable(pool):
            raise ConfigError(f"nodes.{node.name}.ip: {node.ip} is in pool {pool.name}'s ranges; exclude it there")


def _check_pools_disjoint(pools: Iterable[PoolConfig]) -> None:
    """Two pools sharing an address could hand it out twice."""
    seen: list[tuple[str, netaddr.IPSet]] = []
    for pool in pools:
        for family in pool.families:
            addresses = netaddr.IPSet(netaddr.IPRange(first, last) for first, last in family.ranges)
            for other, other_addresses in seen:
                if addresses & other_addresses:
                    key = "ranges" if family.version == 4 else "ranges6"
                    raise ConfigError(f"pools.{pool.name}.{key}: overlap pool {other}")
            seen.append((pool.name, addresses))


def ranges_of(pool: PoolConfig) -> netaddr.IPSet:
    """Every address the pool's ranges hold, both families (an IPSet stays small however large an
    IPv6 range is: it keeps networks, not addresses)."""
    return netaddr.IPSet(netaddr.IPRange(first, last) for family in pool.families for first, last in family.ranges)


def allocatable(pool: PoolConfig) -> netaddr.IPSet:
    """What the pool's ranges hold but its exclusions."""
    return ranges_of(pool) - netaddr.IPSet(pool.exclude)
