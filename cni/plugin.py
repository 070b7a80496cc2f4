#!/usr/bin/python3 -IS
"""The `underlay` CNI plugin: forwards each call, raw, to the node agent and prints its answer.

Why so little here: a runtime executes the plugin once per ADD/DEL, so its start is paid on every
call. The interpreter alone starts in ~8 ms; this file imports only C modules the interpreter has
at hand (`posix`, `sys`, `_socket`) for VERSION, and `json` (~8 ms more: it imports `re`) only to
read the config's agentSocket on the calls it forwards. It sends the CNI_* environment and stdin to
the agent, which validates the call and produces the exact stdout and exit status (`cni.spec`, run
by `node_agent.server`), and copies them back. It runs under `python3 -IS` (no site, no user paths)
and is copied as one file to the runtime's CNI bin dir by `cni.install`, which embeds
`cni/spec.py`'s source in SPEC_SOURCE: when the agent cannot be reached the plugin compiles and runs
the spec itself, so a malformed call still gets its own error.
Where a C compiler is at hand, `cni.install` puts the native forwarder cni/shim.c in front of this
file (same protocol, ~1 ms start): the hot path never runs Python, and this file gets every call the
forwarder does not simply forward (errors above all).

Whatever the input, stdout carries the answer: a result, or one CNI error JSON with exit status 1,
never a traceback (`main` turns even a bug here into error 100).

Wire protocol, one call per connection: the plugin sends a 4-byte big-endian length, that many bytes
of `NAME=VALUE` CNI_* variables separated by NUL, then stdin, and shuts down its sending side; the
agent answers with one byte of exit status followed by stdout, and closes.
"""

import _socket
import posix  # what `os` wraps, loaded at start; importing os costs ~2 ms (stat, posixpath, abc)
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SOCKET = "/run/underlay/agent.sock"
AGENT_TIMEOUT = 120.0
MAX_STDIN = (16 << 20) + 1  # read no more than one byte past cni.spec.MAX_CONFIG: enough to refuse it
MAX_REQUEST = MAX_STDIN + (4 << 20)  # and the CNI_* environment (the kernel caps each string at 128 KiB)
# As the reference plugins do, VERSION names the latest version whatever the config asks.
VERSION_ANSWER = b'{"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}\n'
SPEC_SOURCE: str | None = None  # cni/spec.py's source, put here by cni.install; None when run from the package


def agent_socket(raw: bytes) -> str:
    """The config's agentSocket; the default one for a config that does not say (or that is not
    JSON at all: the agent, or the spec here, reports that)."""
    import json  # here, not at the top: VERSION needs none of it

    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        return DEFAULT_SOCKET
    path = config.get("agentSocket") if isinstance(config, dict) else None
    return path if isinstance(path, str) else DEFAULT_SOCKET


def encode_request(environ: dict[bytes, bytes], stdin: bytes) -> bytes:
    """The CNI_* variables of `environ` (bytes to bytes, as posix.environ) and stdin, as one message."""
    env = b"\0".join(k + b"=" + v for k, v in environ.items() if k.startswith(b"CNI_"))
    return len(env).to_bytes(4, "big") + env + stdin


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
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
    except (OSError, ValueError) as exc:  # ValueError: a path that is no file name (a lone surrogate)
        return answer_without_agent(raw, path, exc)
    if not answer:
        return answer_without_agent(raw, path, None)
    return answer[0], answer[1:]


def answer_without_agent(raw: bytes, path: str, cause: Exception | None) -> tuple[int, bytes]:
    """cni.spec.answer_without_agent, its source compiled only on this rare path."""
    answered: tuple[int, bytes] = spec()["answer_without_agent"](raw, path, cause)
    return answered


def spec() -> "dict[str, Any]":
    """The names of cni/spec.py, compiled only on this rare path."""
    if SPEC_SOURCE is None:
        from cni import spec as module

        return vars(module)
    namespace: dict[str, Any] = {"__name__": "cni.spec"}
    exec(compile(SPEC_SOURCE, "cni/spec.py", "exec"), namespace)
    return namespace


def read_stdin() -> bytes:
    """stdin up to MAX_STDIN bytes; nothing when the runtime gave no stdin at all (fd 0 closed)."""
    if sys.stdin is None:
        return b""
    return sys.stdin.buffer.read(MAX_STDIN)


def answer() -> tuple[int, bytes]:
    raw = read_stdin()
    if posix.environ.get(b"CNI_COMMAND") == b"VERSION":
        return 0, VERSION_ANSWER
    return forward(raw)


def crash_answer(exc: BaseException) -> bytes:
    """Error 100 for a failure of this file itself: stdout still carries a CNI error, not a traceback."""
    import json

    return (json.dumps({"cniVersion": "1.1.0", "code": 100, "msg": "internal error in the underlay CNI plugin",
                        "details": f"{type(exc).__name__}: {exc}"}) + "\n").encode()


def main() -> int:
    try:
        status, out = answer()
    except BaseException as exc:  # even KeyboardInterrupt: the runtime reads stdout, not stderr
        status, out = 1, crash_answer(exc)
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    except (OSError, ValueError, AttributeError):  # stdout closed: nobody to tell
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
