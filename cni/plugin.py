#!/usr/bin/python3 -IS
"""The `underlay` CNI plugin: forwards each call, raw, to the node agent and prints its answer.

Why so little here: a runtime executes the plugin once per ADD/DEL, so its start is paid on every
call. The interpreter alone starts in ~10 ms; `import json, socket` would add ~20 ms (re, enum),
`import os` ~2 ms, and compiling the CNI spec code ~4 ms more. So this file uses only what the
interpreter has loaded at start (`posix`, `sys`) and the C modules `_socket` and `_json`: it sends
the CNI_* environment and stdin to the agent, which validates the call and produces the exact
stdout and exit status (`cni.spec`, run by `node_agent.server`), and copies them back. It runs under
`python3 -IS` (no site, no user paths) and is copied as one file to the runtime's CNI bin dir by
`cni.install`, which embeds `cni/spec.py`'s source in SPEC_SOURCE: when the agent cannot be reached
the plugin compiles and runs the spec itself, so a malformed call still gets its own error.
Where a C compiler is at hand, `cni.install` puts the native forwarder cni/shim.c in front of this
file (same protocol, ~1 ms start); it hands this file every call it does not simply forward.

Wire protocol, one call per connection: the plugin sends a 4-byte big-endian length, that many bytes
of `NAME=VALUE` CNI_* variables separated by NUL, then stdin, and shuts down its sending side; the
agent answers with one byte of exit status followed by stdout, and closes.
"""

import _json
import _socket
import posix  # what `os` wraps, loaded at start; importing os costs ~2 ms (stat, posixpath, abc)
import sys

DEFAULT_SOCKET = "/run/underlay/agent.sock"
AGENT_TIMEOUT = 120.0
MAX_REQUEST = 16 << 20
# As the reference plugins do, VERSION names the latest version whatever the config asks.
VERSION_ANSWER = b'{"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}\n'
SPEC_SOURCE = None  # cni/spec.py's source, put here by cni.install; None when run from the package


class _PlainJson:
    """What `_json.make_scanner` reads from its context: plain JSON, no hooks (as json.loads)."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int, parse_constant = float, int, float
    memo: dict = {}


_scan = _json.make_scanner(_PlainJson())


def agent_socket(raw: bytes) -> str:
    """The config's agentSocket, read by the C scanner json.loads itself uses, minus json's imports."""
    try:
        config = _scan(raw.decode().strip(), 0)[0]
    except (ValueError, StopIteration):  # the agent (or the spec, here) reports the malformed config
        return DEFAULT_SOCKET
    path = config.get("agentSocket") if isinstance(config, dict) else None
    return path if isinstance(path, str) else DEFAULT_SOCKET


def encode_request(environ: dict, stdin: bytes) -> bytes:
    """The CNI_* variables of `environ` (bytes to bytes, as posix.environ) and stdin, as one message."""
    env = b"\0".join(k + b"=" + v for k, v in environ.items() if k.startswith(b"CNI_"))
    return len(env).to_bytes(4, "big") + env + stdin


def decode_request(data: bytes) -> tuple[dict, bytes]:
    """The agent's side of `encode_request`: the environment as text, and stdin."""
    size = int.from_bytes(data[:4], "big")
    entries = data[4:4 + size].decode(errors="surrogateescape").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry), data[4 + size:]


def exchange(path: str, request: bytes) -> bytes:
    """Send one request to the agent at `path`; its whole answer (empty if it closed without one)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)  # blocking: a busy agent's full backlog makes us wait, not fail (EAGAIN)
        sock.settimeout(AGENT_TIMEOUT)
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def forward(raw: bytes) -> tuple[int, bytes]:
    """The agent's exit status and stdout for this call; worked out here only if the agent fails us."""
    path = agent_socket(raw)
    try:
        answer = exchange(path, encode_request(posix.environ, raw))
    except OSError as exc:
        return spec()["answer_without_agent"](raw, path, exc)
    if not answer:
        return spec()["answer_without_agent"](raw, path, None)
    return answer[0], answer[1:]


def spec() -> dict:
    """The names of cni/spec.py, compiled only on this rare path."""
    if SPEC_SOURCE is None:
        from cni import spec as module

        return vars(module)
    namespace = {"__name__": "cni.spec"}
    exec(compile(SPEC_SOURCE, "cni/spec.py", "exec"), namespace)
    return namespace


def main() -> int:
    raw = sys.stdin.buffer.read()
    if posix.environ.get(b"CNI_COMMAND") == b"VERSION":
        status, out = 0, VERSION_ANSWER
    else:
        status, out = forward(raw)
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
