"""The CNI spec as the underlay plugin speaks it: one call's environment and stdin → exit status
and stdout.

It runs inside the node agent (`node_agent.server`), which gets each call forwarded raw by the
plugin (`cni.plugin`): environment and config validation, the error codes, the result format of
each spec version, prevResult merging, delegation to an IPAM plugin. The plugin runs it itself only
when the agent cannot be reached, so a malformed call still gets its own error rather than "agent
not reachable": for that, `cni.install` embeds this file's source in the plugin, so it must stay
self-contained (standard library only, no package imports).

The verb itself is a parameter: `agent(request)` carries it out (the agent's `Agent.handle`, or a
stub raising why it cannot), `ipam(config, command, env, stdin)` runs the delegated IPAM plugin.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
SINCE_1_1 = ("STATUS", "GC")
MODES = ("macvlan", "ipvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
KNOWN_ARGS = ("IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID",
              "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_NETWORK", "IP", "MAC")

# Error codes of the CNI spec, and ours (100+).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
BAD_ENV = 4
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
UNAVAILABLE = 50
UNAVAILABLE_DEGRADED = 51
INTERNAL = 100
REFUSED = 101
INTERFACE_EXISTS = 102

MAX_CONFIG = 16 << 20  # bytes of stdin; a real config, prevResult and all, is a few KiB
MAX_DEPTH = 64  # JSON nesting; past ~1000 Python's decoder fails (RecursionError), so say where we stop
MAX_CONTAINER_ID = 200  # the agent names a state file `<id>_<ifname>.json`: within NAME_MAX (255)

REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}

JsonObject = dict[str, Any]  # a decoded JSON object: configs, results and requests carry others' keys too
Env = Mapping[str, str]  # the call's environment (CNI_COMMAND, CNI_ARGS, ...)
Agent = Callable[[JsonObject], "JsonObject | None"]  # carries out a verb, or raises CniError
Ipam = Callable[[JsonObject, str, Env, bytes], JsonObject]  # runs the delegated IPAM plugin: its neutral result


class CniError(Exception):
    """An error the spec lets us report: printed as JSON on stdout, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_dict(self) -> JsonObject:
        return {"code": self.code, "msg": self.msg, "details": self.details}


class AgentUnreachable(CniError):
    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(TRY_AGAIN_LATER, f"node agent not reachable at {path}", cause.strerror or str(cause))


# --- results in each spec version ---------------------------------------------------------------
def to_version(result: JsonObject, version: str) -> JsonObject:
    """A version-neutral result (1.0.0 shape) in the format of spec `version`."""
    out: JsonObject = {"cniVersion": version}
    for key in ("interfaces", "ips", "routes", "dns"):
        if result.get(key):
            out[key] = [dict(item) for item in result[key]] if key != "dns" else dict(result[key])
    if version == "0.4.0":
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip["address"] else "4"
    return out


def neutral(result: JsonObject | None) -> JsonObject:
    """Any supported version's result as the version-neutral shape (drops 0.4.0's ip versions)."""
    result = result or {}
    out = {key: result[key] for key in ("interfaces", "ips", "routes", "dns") if result.get(key)}
    out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in out.get("ips", [])]
    return out


def merge(prev: JsonObject, ours: JsonObject) -> JsonObject:
    """Our result appended to a previous plugin's: interface indexes in `ours` shift past prev's."""
    prev, ours = neutral(prev), neutral(ours)
    shift = len(prev.get("interfaces", []))
    ips = [dict(ip, interface=ip["interface"] + shift) if "interface" in ip else ip for ip in ours["ips"]]
    return {
        "interfaces": prev.get("interfaces", []) + ours.get("interfaces", []),
        "ips": prev["ips"] + ips,
        "routes": prev.get("routes", []) + ours.get("routes", []),
        "dns": ours.get("dns") or prev.get("dns") or {},
    }


# --- strict JSON: what both the agent's stdin and the controller's REST bodies accept --------------
def strict_json(raw: bytes, *, limit: int = MAX_CONFIG, max_depth: int = MAX_DEPTH) -> Any:
    """`raw` decoded as RFC 8259 JSON, or ValueError saying why not.

    Stricter than `json.loads` where its leniency would surface later as a crash or as output that
    is not JSON: only UTF-8 (no UTF-16 guessing), no NaN/Infinity and no number that overflows to
    one, no lone surrogate (SQLite and UTF-8 output refuse them), nesting at most `max_depth` deep
    (instead of a RecursionError wherever the interpreter's stack runs out)."""
    if len(raw) > limit:
        raise ValueError(f"{len(raw)} bytes, more than the limit of {limit}")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    _check_tree(value, max_depth)
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 64:  # well before int()'s own 4,300-digit guard and its advice
        raise ValueError(f"integer of {len(text)} digits is out of range")
    return int(text)


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and valid Unicode everywhere, iteratively (a recursive walk would fail as json did)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise ValueError(f"string {item[:40]!r} is not valid Unicode (lone surrogate)") from None
            continue
        children = [*item, *item.values()] if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children and depth >= max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        pending.extend((child, depth + 1) for child in children)


# --- names: what runtimes, the kernel and Kubernetes accept -------------------------------------
_CNI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # container IDs and network names
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_KERNEL_SPACE = frozenset(b" \t\n\v\f\r\xa0")  # the kernel's isspace(), which counts Latin-1's NBSP
CONTAINER_ID_RULE = f"1 to {MAX_CONTAINER_ID} of a-z, A-Z, 0-9, '_', '.', '-', starting with a letter or digit"
IFNAME_RULE = "1 to 15 bytes of UTF-8, not '.' or '..', no '/', ':', '%', NUL or whitespace"
NAMESPACE_RULE = "a DNS label: at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit"
POD_NAME_RULE = "a DNS subdomain: at most 253 of a-z, 0-9, '-' and '.', each part starting and ending alphanumeric"


def valid_container_id(value: str) -> bool:
    """The CNI spec's container ID (libcni's regexp), bounded by what the agent can name a file after."""
    return len(value) <= MAX_CONTAINER_ID and _CNI_NAME.fullmatch(value) is not None


def valid_ifname(name: str) -> bool:
    """The kernel's dev_valid_name() on the name's UTF-8 bytes, and no '%': the kernel takes `eth%d`
    as a pattern and names the link `eth0` (a NUL would cut the name short in netlink)."""
    try:
        raw = name.encode()
    except UnicodeEncodeError:  # from an environment that was not UTF-8 (surrogateescape)
        return False
    return (0 < len(raw) <= 15 and raw not in (b".", b"..")
            and not any(byte in _KERNEL_SPACE or byte in b"/:%\0" for byte in raw))


def valid_namespace(value: str) -> bool:
    """A Kubernetes namespace name (DNS-1123 label)."""
    return len(value) <= 63 and re.fullmatch(_DNS_LABEL, value) is not None


def valid_pod_name(value: str) -> bool:
    """A Kubernetes pod name (DNS-1123 subdomain)."""
    return len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value) is not None


# --- request parsing ----------------------------------------------------------------------------
def parse_config(raw: bytes) -> JsonObject:
    if not raw.strip():
        raise CniError(DECODE_FAILURE, "no network configuration on stdin",
                       "the runtime must pass the network configuration as JSON on stdin")
    try:
        config = strict_json(raw)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "failed to decode the network configuration", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"unsupported cniVersion {version!r}",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    return config


def validate_config(config: JsonObject, command: str = "ADD") -> None:
    """The plugin's own keys, and the shape of what the agent reads for this command; the agent
    checks what needs the kernel (master, its MTU)."""
    name = config.get("name")
    if not isinstance(name, str) or not _CNI_NAME.fullmatch(name):
        raise CniError(INVALID_CONFIG, f"invalid network name {shown(name)}",
                       "the spec's rule: letters, digits, '_', '.', '-', starting with a letter or digit")
    _require(config, "type", str)
    if config.get("mode", "macvlan") not in MODES:
        raise CniError(INVALID_CONFIG, f"unknown mode {shown(config['mode'])}", f"mode must be one of {', '.join(MODES)}")
    if config.get("macvlanMode", "bridge") not in MACVLAN_MODES:
        raise CniError(INVALID_CONFIG, f"unknown macvlanMode {shown(config['macvlanMode'])}",
                       f"macvlanMode must be one of {', '.join(MACVLAN_MODES)}")
    mtu = config.get("mtu")
    if mtu is not None and (type(mtu) is not int or not 68 <= mtu <= 65535):
        raise CniError(INVALID_CONFIG, f"invalid mtu {shown(mtu)}", "mtu must be an integer from 68 to 65535")
    for key in ("master", "agentSocket", "ipvlanMode", "pool"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise CniError(INVALID_CONFIG, f"{key} must be a string, not {shown(config[key])}")
    service_cidrs(config)
    ipam = config.get("ipam")
    if ipam is not None and not (isinstance(ipam, dict) and (not ipam or isinstance(ipam.get("type"), str))):
        raise CniError(INVALID_CONFIG, "ipam must be an object with a string type")
    if command in ("ADD", "CHECK"):
        _validate_shape(config, RUNTIME_CONFIG_SHAPE, "runtimeConfig")
        _validate_shape(config, PREV_RESULT_SHAPE, "prevResult")
    if command == "GC":
        for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
            _validate_shape(config, {key: ATTACHMENT_SHAPE}, key)


def service_cidrs(config: JsonObject) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The cluster's Service ranges (`serviceCIDR`: a list of networks, IPv4 and/or IPv6), which
    pods reach through their node so that kube-proxy's rules there apply (node_agent/shimroutes.py)."""
    value = config.get("serviceCIDR")
    if value is None:
        return []
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, f"serviceCIDR must be a list of networks, not {shown(value)}",
                       'e.g. "serviceCIDR": ["10.96.0.0/12", "fd00:96::/112"]')
    networks = []
    for index, item in enumerate(value):
        try:
            if not isinstance(item, str) or "/" not in item:
                raise ValueError("each entry is a string such as 10.96.0.0/12")
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise CniError(INVALID_CONFIG, f"serviceCIDR[{index}]: {shown(item)} is not a network", str(exc)) from None
    return networks


# What the agent reads of these keys: {key: type} for an object, [shape] for a list of such objects;
# `!` marks a key that must be there. Other keys pass through untouched (they belong to others).
RUNTIME_CONFIG_SHAPE = {"runtimeConfig": {"ips": [str], "mac": str}}
PREV_RESULT_SHAPE = {"prevResult": {
    "interfaces": [{"name": str, "mac": str, "sandbox": str}],
    "ips": [{"!address": str, "gateway": str, "interface": int}],
    "routes": [{"!dst": str, "gw": str}],
    "dns": {},
}}  # fmt: skip
ATTACHMENT_SHAPE = [{"containerID": str, "ifname": str}]


def _validate_shape(value: Any, shape: Any, path: str) -> None:
    """`value` has `shape` (see above), or a CniError naming the first place where it does not."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise CniError(INVALID_CONFIG, f"{path} must be an object, not {shown(value)}")
        for key, inner in shape.items():
            name = key.lstrip("!")
            if value.get(name) is not None:
                _validate_shape(value[name], inner, f"{path}.{name}" if path != name else name)
            elif key.startswith("!"):
                raise CniError(INVALID_CONFIG, f"{path}.{name} is missing")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise CniError(INVALID_CONFIG, f"{path} must be a list, not {shown(value)}")
        for index, item in enumerate(value):
            _validate_shape(item, shape[0], f"{path}[{index}]")
    elif not (isinstance(value, shape) and (shape is not int or type(value) is int)):
        raise CniError(INVALID_CONFIG, f"{path} must be a {'string' if shape is str else 'number'}, not {shown(value)}")


def _require(config: JsonObject, key: str, kind: type) -> None:
    if not isinstance(config.get(key), kind):
        raise CniError(INVALID_CONFIG, f"network configuration lacks a valid {key!r}")


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short (the value may be megabytes), and
    an environment value that was not UTF-8 as the bytes it was (b'a\\xa0', not 'a\\udca0')."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            try:
                value = value.encode(errors="surrogateescape")
            except UnicodeEncodeError:
                pass  # a lone surrogate from a JSON escape: its repr says it
    return cut(repr(value))


def cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 8] + "...(cut)"


def parse_args(raw: str) -> dict[str, str]:
    """CNI_ARGS `K=V;K=V`; unknown keys are an error unless IgnoreUnknown is true."""
    args: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(BAD_ENV, f"CNI_ARGS: invalid pair {shown(pair)}", "expected KEY=VALUE;KEY=VALUE")
        args[key] = value
    if args.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        unknown = sorted(set(args) - set(KNOWN_ARGS))
        if unknown:
            raise CniError(UNSUPPORTED_FIELD, f"CNI_ARGS: unknown key {unknown[0]}={args[unknown[0]]}",
                           "set IgnoreUnknown=true to ignore unknown keys")
    for key, valid, rule in (("K8S_POD_NAMESPACE", valid_namespace, NAMESPACE_RULE),
                             ("K8S_POD_NAME", valid_pod_name, POD_NAME_RULE)):
        if key in args and not valid(args[key]):
            raise CniError(BAD_ENV, f"CNI_ARGS: {key}={shown(args[key])} is not a Kubernetes name", rule)
    return args


def parse_env(env: Env, command: str) -> JsonObject:
    for name in REQUIRED_ENV[command]:
        if not env.get(name):
            raise CniError(BAD_ENV, f"required environment variable {name} is missing")
    container_id, ifname = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", "")
    if container_id and not valid_container_id(container_id):
        raise CniError(BAD_ENV, f"invalid CNI_CONTAINERID {shown(container_id)}", CONTAINER_ID_RULE)
    if ifname and not valid_ifname(ifname):
        raise CniError(BAD_ENV, f"invalid CNI_IFNAME {shown(ifname)}", IFNAME_RULE)
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not os.path.exists(netns):
        raise CniError(BAD_ENV, f"CNI_NETNS {netns} does not exist")
    return {"container_id": container_id, "ifname": ifname, "netns": netns,
            "args": parse_args(env.get("CNI_ARGS", ""))}


# --- the verbs ------------------------------------------------------------------------------------
def respond(env: Env, raw: bytes, *, agent: Agent, ipam: Ipam) -> tuple[int, bytes]:
    """Exit status and stdout for one call: the result JSON, nothing, or the error JSON. Never
    raises: whatever goes wrong becomes an error JSON, never a traceback on a runtime's stdout."""
    try:
        output = handle(env, raw, agent=agent, ipam=ipam)
        return 0, b"" if output is None else (json.dumps(output) + "\n").encode()
    except CniError as exc:
        error = exc
    except Exception as exc:
        error = CniError(INTERNAL, "internal error in the underlay CNI plugin", f"{type(exc).__name__}: {exc}")
    return 1, error_answer(error, raw)


def error_answer(error: CniError, raw: bytes) -> bytes:
    """The error JSON for stdout, in the config's cniVersion when it is one we speak."""
    return (json.dumps({"cniVersion": _version_of(raw), **error.as_dict()}) + "\n").encode()


def handle(env: Env, raw: bytes, *, agent: Agent, ipam: Ipam) -> JsonObject | None:
    """The JSON to print for a successful call, or None (DEL, GC, CHECK print nothing)."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
    config = parse_config(raw)
    if command not in COMMANDS:
        raise CniError(BAD_ENV, f"unknown CNI_COMMAND {shown(command)}", f"expected one of {', '.join(COMMANDS)}")
    if command in SINCE_1_1 and config["cniVersion"] != "1.1.0":
        raise CniError(INCOMPATIBLE_VERSION, f"config version {config['cniVersion']} does not allow {command}",
                       "STATUS and GC need cniVersion 1.1.0")
    validate_config(config, command)
    request = dict(parse_env(env, command), command=command, config=config)
    if command == "STATUS":
        status(agent, request)
        return None
    delegated = command in ("ADD", "DEL", "CHECK") and bool((config.get("ipam") or {}).get("type"))
    if command == "ADD":
        return add(request, env, raw, agent=agent, ipam=ipam if delegated else None)
    if delegated and command == "CHECK":
        ipam(config, command, env, raw)
    agent(request)
    if delegated and command == "DEL":  # the reverse of ADD: our link first, then the addresses
        ipam(config, command, env, raw)
    return None


def add(request: JsonObject, env: Env, raw: bytes, *, agent: Agent, ipam: Ipam | None) -> JsonObject:
    """ADD; a delegated IPAM plugin's addresses go to the agent and are released again on failure."""
    config = request["config"]
    if ipam is not None:
        request["ipam"] = ipam(config, "ADD", env, raw)
    try:
        result = agent(request)
    except CniError:
        if ipam is not None:
            try:
                ipam(config, "DEL", env, raw)
            except CniError:
                pass  # the original error is the one to report
        raise
    if result is None:  # an agent answers every ADD with its result; say so rather than crash below
        raise CniError(INTERNAL, "the node agent returned no result for ADD")
    if config.get("prevResult"):
        result = merge(config["prevResult"], result)
    return to_version(result, config["cniVersion"])


def status(agent: Agent, request: JsonObject) -> None:
    """STATUS: 50 when the agent or the controller cannot serve an ADD."""
    try:
        agent(request)
    except CniError as exc:
        if exc.code in (UNAVAILABLE, UNAVAILABLE_DEGRADED):
            raise
        raise CniError(UNAVAILABLE, exc.msg, exc.details) from None
    return None


def _version_of(raw: bytes) -> str:
    """The cniVersion to put in an error: the config's when it is one we speak."""
    try:
        config = strict_json(raw)
    except ValueError:
        return LATEST
    version = config.get("cniVersion") if isinstance(config, dict) else None
    return version if version in SUPPORTED_VERSIONS else LATEST


def answer_without_agent(raw: bytes, path: str, cause: Exception | None) -> tuple[int, bytes]:
    """The plugin's answer when the agent at `path` failed it (`cause`; None: closed without an
    answer): the call validated as the agent would, else why the agent is missing (retry later)."""
    if isinstance(cause, (FileNotFoundError, ConnectionRefusedError, PermissionError)):
        failure: CniError = AgentUnreachable(path, cause)
    elif cause is not None:
        failure = CniError(TRY_AGAIN_LATER, f"node agent at {path} failed to answer", str(cause))
    else:
        failure = CniError(TRY_AGAIN_LATER, f"node agent at {path} closed the connection without an answer")

    def fail(*_: object) -> JsonObject:
        raise failure

    return respond(dict(os.environ), raw, agent=fail, ipam=fail)
