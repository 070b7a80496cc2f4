#!/usr/bin/python3 -IS
"""The `underlay` CNI plugin: a stdlib-only shim that forwards each request to the node agent.

Why a shim: the runtime executes a plugin once per ADD/DEL, and importing pyroute2 alone costs more
than a whole ADD of the reference Go plugins. So this file imports nothing beyond the standard
library's smallest modules, runs under `python3 -IS` (no site, no user paths), and leaves the
netlink and controller work to the agent, which keeps them warm. It is copied as a single file to
the runtime's CNI bin dir (see `cni.install`), so it must stay self-contained.

What it owns is the CNI spec: environment and config validation, the error codes, VERSION, the
result format of each spec version, prevResult merging, and delegation to an optional IPAM plugin.
Wire protocol to the agent: one request and one response, each a 4-byte big-endian length and a
JSON object; the response is `{"result": ...}` or `{"error": {"code", "msg", "details"}}`.
"""

import json
import os
import socket
import struct
import sys

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
SINCE_1_1 = ("STATUS", "GC")
DEFAULT_SOCKET = "/run/underlay/agent.sock"
MODES = ("macvlan", "ipvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
KNOWN_ARGS = ("IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID",
              "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_NETWORK", "IP", "MAC")
AGENT_TIMEOUT = 120.0
FRAME = struct.Struct(">I")
MAX_FRAME = 16 << 20

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


class CniError(Exception):
    """An error the spec lets us report: printed as JSON on stdout, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_dict(self) -> dict:
        return {"code": self.code, "msg": self.msg, "details": self.details}


# --- wire protocol (also imported by the agent) -----------------------------------------------
def send_frame(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(FRAME.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> dict | None:
    """The next message, or None when the peer closed before sending one."""
    header = _recv_exact(sock, FRAME.size)
    if header is None:
        return None
    (length,) = FRAME.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is larger than {MAX_FRAME}")
    body = _recv_exact(sock, length)
    if body is None:
        raise ConnectionError("peer closed in the middle of a frame")
    return json.loads(body)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            if missing == size:
                return None
            raise ConnectionError("peer closed in the middle of a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


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


REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}


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


# --- talking to the agent and to an IPAM plugin ------------------------------------------------
def call_agent(path: str, request: dict) -> dict:
    """The agent's result; a CniError for its errors, None-safe for an unreachable agent."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)  # blocking: a busy agent's full backlog makes us wait, not fail (EAGAIN)
            sock.settimeout(AGENT_TIMEOUT)
            send_frame(sock, request)
            reply = recv_frame(sock)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
        raise AgentUnreachable(path, exc) from None
    except (OSError, ValueError) as exc:
        raise CniError(TRY_AGAIN_LATER, f"node agent at {path} failed to answer", str(exc)) from None
    if reply is None:
        raise CniError(TRY_AGAIN_LATER, f"node agent at {path} closed the connection without an answer")
    if "error" in reply:
        error = reply["error"]
        raise CniError(int(error["code"]), error["msg"], error.get("details", ""))
    return reply["result"]


class AgentUnreachable(CniError):
    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(TRY_AGAIN_LATER, f"node agent not reachable at {path}", cause.strerror or str(cause))


def run_ipam(config: dict, command: str, env: dict, raw: bytes) -> dict:
    """Delegate to the IPAM plugin named by `ipam.type`, found in CNI_PATH, with our env and stdin."""
    import subprocess  # only here: standalone IPAM is the uncommon path

    ipam_type = config["ipam"]["type"]
    for directory in env.get("CNI_PATH", "").split(os.pathsep):
        path = os.path.join(directory, ipam_type)
        if directory and os.access(path, os.X_OK):
            break
    else:
        raise CniError(INVALID_CONFIG, f"IPAM plugin {ipam_type!r} not found in CNI_PATH")
    proc = subprocess.run([path], input=raw, capture_output=True, env=dict(env, CNI_COMMAND=command))
    output = json.loads(proc.stdout or b"{}")
    if proc.returncode:
        raise CniError(int(output.get("code", INTERNAL)), f"ipam {ipam_type}: {output.get('msg', '')}",
                       output.get("details", proc.stderr.decode(errors="replace")))
    return neutral(output)


# --- the verbs ------------------------------------------------------------------------------------
def handle(env: dict, raw: bytes) -> dict | None:
    """The JSON to print for a successful call, or None (DEL, GC, CHECK print nothing)."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return version_info(raw)
    config = parse_config(raw)
    if command not in COMMANDS:
        raise CniError(BAD_ENV, f"unknown CNI_COMMAND {command!r}", f"expected one of {', '.join(COMMANDS)}")
    if command in SINCE_1_1 and config["cniVersion"] != "1.1.0":
        raise CniError(INCOMPATIBLE_VERSION, f"config version {config['cniVersion']} does not allow {command}",
                       "STATUS and GC need cniVersion 1.1.0")
    validate_config(config)
    request = dict(parse_env(env, command), command=command, config=config)
    socket_path = config.get("agentSocket", DEFAULT_SOCKET)
    if command == "STATUS":
        return status(socket_path, request)
    ipam = command in ("ADD", "DEL", "CHECK") and bool(config.get("ipam", {}).get("type"))
    if command == "ADD":
        return add(socket_path, request, env, raw) if ipam else _add(socket_path, request)
    if ipam and command == "CHECK":
        run_ipam(config, command, env, raw)
    call_agent(socket_path, request)
    if ipam and command == "DEL":  # the reverse of ADD: our link first, then the addresses
        run_ipam(config, command, env, raw)
    return None


def add(socket_path: str, request: dict, env: dict, raw: bytes) -> dict:
    """ADD with a delegated IPAM plugin: its addresses go to the agent; released again on failure."""
    request["ipam"] = run_ipam(request["config"], "ADD", env, raw)
    try:
        return _add(socket_path, request)
    except CniError:
        try:
            run_ipam(request["config"], "DEL", env, raw)
        except CniError:
            pass  # the original error is the one to report
        raise


def _add(socket_path: str, request: dict) -> dict:
    config = request["config"]
    result = call_agent(socket_path, request)
    if config.get("prevResult"):
        result = merge(config["prevResult"], result)
    return to_version(result, config["cniVersion"])


def status(socket_path: str, request: dict) -> None:
    """STATUS: 50 when the agent or the controller cannot serve an ADD."""
    try:
        call_agent(socket_path, request)
    except AgentUnreachable as exc:
        raise CniError(UNAVAILABLE, exc.msg, exc.details) from None
    except CniError as exc:
        if exc.code in (UNAVAILABLE, UNAVAILABLE_DEGRADED):
            raise
        raise CniError(UNAVAILABLE, exc.msg, exc.details) from None
    return None


def version_info(raw: bytes) -> dict:
    try:
        requested = json.loads(raw or b"{}").get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        requested = None
    version = requested if requested in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _version_of(raw: bytes) -> str:
    """The cniVersion to put in an error: the config's when it is one we speak."""
    try:
        version = json.loads(raw).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return LATEST
    return version if version in SUPPORTED_VERSIONS else LATEST


def main() -> int:
    raw = b""
    try:
        raw = sys.stdin.buffer.read()
        output = handle(dict(os.environ), raw)
    except CniError as exc:
        error = exc
    except BaseException as exc:  # never a traceback on a runtime's stdout
        error = CniError(INTERNAL, "internal error in the underlay CNI plugin", f"{type(exc).__name__}: {exc}")
    else:
        if output is not None:
            sys.stdout.write(json.dumps(output) + "\n")
        return 0
    sys.stdout.write(json.dumps({"cniVersion": _version_of(raw), **error.as_dict()}) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
