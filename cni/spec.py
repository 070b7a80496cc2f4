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

import json
import os
from collections.abc import Callable

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

REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}

Agent = Callable[[dict], "dict | None"]  # carries out a verb, or raises CniError
Ipam = Callable[[dict, str, dict, bytes], dict]  # runs the delegated IPAM plugin: its neutral result


class CniError(Exception):
    """An error the spec lets us report: printed as JSON on stdout, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_dict(self) -> dict:
        return {"code": self.code, "msg": self.msg, "details": self.details}


class AgentUnreachable(CniError):
    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(TRY_AGAIN_LATER, f"node agent not reachable at {path}", cause.strerror or str(cause))


# --- results in each spec version ---------------------------------------------------------------
def to_version(result: dict, version: str) -> dict:
    """A version-neutral result (1.0.0 shape) in the format of spec `version`."""
    out = {"cniVersion": version}
    for key in ("interfaces", "ips", "routes", "dns"):
        if result.get(key):
            out[key] = [dict(item) for item in result[key]] if key != "dns" else dict(result[key])
    if version == "0.4.0":
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip["address"] else "4"
    return out


def neutral(result: dict | None) -> dict:
    """Any supported version's result as the version-neutral shape (drops 0.4.0's ip versions)."""
    result = result or {}
    out = {key: result[key] for key in ("interfaces", "ips", "routes", "dns") if result.get(key)}
    out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in out.get("ips", [])]
    return out


def merge(prev: dict, ours: dict) -> dict:
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


# --- request parsing ----------------------------------------------------------------------------
def parse_config(raw: bytes) -> dict:
    try:
        config = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODE_FAILURE, "failed to decode the network configuration", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"unsupported cniVersion {version!r}",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    return config


def validate_config(config: dict) -> None:
    """The plugin's own keys; the agent checks what needs the kernel (master, its MTU)."""
    _require(config, "name", str)
    _require(config, "type", str)
    if config.get("mode", "macvlan") not in MODES:
        raise CniError(INVALID_CONFIG, f"unknown mode {config['mode']!r}", f"mode must be one of {', '.join(MODES)}")
    if config.get("macvlanMode", "bridge") not in MACVLAN_MODES:
        raise CniError(INVALID_CONFIG, f"unknown macvlanMode {config['macvlanMode']!r}",
                       f"macvlanMode must be one of {', '.join(MACVLAN_MODES)}")
    mtu = config.get("mtu")
    if mtu is not None and (type(mtu) is not int or not 68 <= mtu <= 65535):
        raise CniError(INVALID_CONFIG, f"invalid mtu {mtu!r}", "mtu must be an integer from 68 to 65535")
    for key in ("master", "agentSocket"):
        if key in config and not isinstance(config[key], str):
            raise CniError(INVALID_CONFIG, f"{key} must be a string")
    ipam = config.get("ipam")
    if ipam is not None and not (isinstance(ipam, dict) and (not ipam or isinstance(ipam.get("type"), str))):
        raise CniError(INVALID_CONFIG, "ipam must be an object with a string type")


def _require(config: dict, key: str, kind: type) -> None:
    if not isinstance(config.get(key), kind):
        raise CniError(INVALID_CONFIG, f"network configuration lacks a valid {key!r}")


def parse_args(raw: str) -> dict:
    """CNI_ARGS `K=V;K=V`; unknown keys are an error unless IgnoreUnknown is true."""
    args: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(BAD_ENV, f"CNI_ARGS: invalid pair {pair!r}", "expected KEY=VALUE;KEY=VALUE")
        args[key] = value
    if args.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        unknown = sorted(set(args) - set(KNOWN_ARGS))
        if unknown:
            raise CniError(UNSUPPORTED_FIELD, f"CNI_ARGS: unknown key {unknown[0]}={args[unknown[0]]}",
                           "set IgnoreUnknown=true to ignore unknown keys")
    return args


def parse_env(env: dict, command: str) -> dict:
    for name in REQUIRED_ENV[command]:
        if not env.get(name):
            raise CniError(BAD_ENV, f"required environment variable {name} is missing")
    container_id, ifname = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", "")
    if container_id and not _valid_container_id(container_id):
        raise CniError(BAD_ENV, f"invalid CNI_CONTAINERID {container_id!r}", "allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if ifname and (len(ifname) > 15 or ifname in (".", "..") or any(c in "/: \t\n" for c in ifname)):
        raise CniError(BAD_ENV, f"invalid CNI_IFNAME {ifname!r}", "at most 15 characters, no '/', ':' or spaces")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not os.path.exists(netns):
        raise CniError(BAD_ENV, f"CNI_NETNS {netns} does not exist")
    return {"container_id": container_id, "ifname": ifname, "netns": netns,
            "args": parse_args(env.get("CNI_ARGS", ""))}


def _valid_container_id(value: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    return value[0].isascii() and value[0].isalnum() and set(value) <= allowed


# --- the verbs ------------------------------------------------------------------------------------
def respond(env: dict, raw: bytes, *, agent: Agent, ipam: Ipam) -> tuple[int, bytes]:
    """Exit status and stdout for one call: the result JSON, nothing, or the error JSON."""
    try:
        output = handle(env, raw, agent=agent, ipam=ipam)
    except CniError as exc:
        error = exc
    except Exception as exc:  # never a traceback on a runtime's stdout
        error = CniError(INTERNAL, "internal error in the underlay CNI plugin", f"{type(exc).__name__}: {exc}")
    else:
        return 0, b"" if output is None else (json.dumps(output) + "\n").encode()
    return 1, (json.dumps({"cniVersion": _version_of(raw), **error.as_dict()}) + "\n").encode()


def handle(env: dict, raw: bytes, *, agent: Agent, ipam: Ipam) -> dict | None:
    """The JSON to print for a successful call, or None (DEL, GC, CHECK print nothing)."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
    config = parse_config(raw)
    if command not in COMMANDS:
        raise CniError(BAD_ENV, f"unknown CNI_COMMAND {command!r}", f"expected one of {', '.join(COMMANDS)}")
    if command in SINCE_1_1 and config["cniVersion"] != "1.1.0":
        raise CniError(INCOMPATIBLE_VERSION, f"config version {config['cniVersion']} does not allow {command}",
                       "STATUS and GC need cniVersion 1.1.0")
    validate_config(config)
    request = dict(parse_env(env, command), command=command, config=config)
    if command == "STATUS":
        return status(agent, request)
    delegated = command in ("ADD", "DEL", "CHECK") and bool(config.get("ipam", {}).get("type"))
    if command == "ADD":
        return add(request, env, raw, agent=agent, ipam=ipam if delegated else None)
    if delegated and command == "CHECK":
        ipam(config, command, env, raw)
    agent(request)
    if delegated and command == "DEL":  # the reverse of ADD: our link first, then the addresses
        ipam(config, command, env, raw)
    return None


def add(request: dict, env: dict, raw: bytes, *, agent: Agent, ipam: Ipam | None) -> dict:
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
    if config.get("prevResult"):
        result = merge(config["prevResult"], result)
    return to_version(result, config["cniVersion"])


def status(agent: Agent, request: dict) -> None:
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
        version = json.loads(raw).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return LATEST
    return version if version in SUPPORTED_VERSIONS else LATEST


def answer_without_agent(raw: bytes, path: str, cause: OSError | None) -> tuple[int, bytes]:
    """The plugin's answer when the agent at `path` failed it (`cause`; None: closed without an
    answer): the call validated as the agent would, else why the agent is missing (retry later)."""
    if isinstance(cause, (FileNotFoundError, ConnectionRefusedError, PermissionError)):
        failure: CniError = AgentUnreachable(path, cause)
    elif cause is not None:
        failure = CniError(TRY_AGAIN_LATER, f"node agent at {path} failed to answer", str(cause))
    else:
        failure = CniError(TRY_AGAIN_LATER, f"node agent at {path} closed the connection without an answer")

    def fail(*_: object) -> dict:
        raise failure

    return respond(dict(os.environ), raw, agent=fail, ipam=fail)
