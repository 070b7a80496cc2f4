"""A command channel into a running User-Mode Linux instance, through a directory both sides see.

The host drops a request (`<id>.req`: argv, environment, stdin, timeout) into the spool directory,
which the instance mounts read-write through hostfs; `serve()`, a loop inside the instance, runs it
and writes `<id>.res` (exit status, stdout, stderr). Files, not the network: the channel works
whatever state the instance's network is in, which is what one wants when debugging it. Both sides
write a temporary name and rename it, so neither ever reads half a file; the instance fsyncs first,
since hostfs writes sit in its own page cache until then.

Inside: `python -m deploy.uml.channel SPOOL` (it runs until the instance powers off).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

POLL = 0.02  # seconds between looks at the spool, on both sides
GRACE = 15  # seconds the host waits beyond a command's own timeout (the loop may be busy starting it)
TIMED_OUT = 124  # exit status of a command killed at its timeout, as timeout(1) says


class ChannelError(RuntimeError):
    """The instance did not answer: it is not running, or is stuck; the message says where to look."""


def call(spool: Path, argv: Sequence[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None,
         timeout: float = 60, grace: float = GRACE) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` inside the instance serving `spool`; its exit status and output, as subprocess.run.
    Raises ChannelError when no answer comes within `timeout` + `grace` seconds."""
    ident = secrets.token_hex(8)
    request = {"argv": list(argv), "env": dict(env) if env is not None else None, "timeout": timeout,
               "stdin": base64.b64encode(stdin).decode()}
    _write(spool / f"{ident}.req", request, sync=False)
    answer = spool / f"{ident}.res"
    deadline = time.monotonic() + timeout + grace
    while not answer.exists():
        if time.monotonic() > deadline:
            (spool / f"{ident}.req").unlink(missing_ok=True)
            raise ChannelError(f"no answer through {spool} within {timeout + grace:g} s to {' '.join(argv)!r}: "
                               "is the instance running? (its console.log is beside the spool)")
        time.sleep(POLL)
    result = json.loads(answer.read_text())
    answer.unlink()
    return subprocess.CompletedProcess(list(argv), result["returncode"], base64.b64decode(result["stdout"]),
                                       base64.b64decode(result["stderr"]))


def serve(spool: Path) -> None:
    """Inside the instance: run each request in its own thread (an exec may outlast the next one)."""
    spool.mkdir(parents=True, exist_ok=True)
    _write(spool / "ready", os.getpid(), sync=True)
    while True:
        for request in sorted(spool.glob("*.req")):
            taken = request.with_suffix(".run")
            try:
                request.rename(taken)
            except FileNotFoundError:  # the host gave up on it
                continue
            threading.Thread(target=_answer, args=(taken,), daemon=True).start()
        time.sleep(POLL)


def _answer(taken: Path) -> None:
    """Run one request and write its result where the host waits for it."""
    try:
        request = json.loads(taken.read_text())
        proc = subprocess.run(request["argv"], input=base64.b64decode(request["stdin"]), capture_output=True,
                              env=request["env"], timeout=request["timeout"])
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        returncode, stdout = TIMED_OUT, expired.stdout or b""
        stderr = (expired.stderr or b"") + f"timed out after {expired.timeout:g} s\n".encode()
    except Exception as error:  # noqa: BLE001 -- a missing program, a bad request: the host must hear why
        returncode, stdout, stderr = 127, b"", f"{type(error).__name__}: {error}\n".encode()
    _write(taken.with_suffix(".res"), {"returncode": returncode, "stdout": base64.b64encode(stdout).decode(),
                                       "stderr": base64.b64encode(stderr).decode()}, sync=True)
    taken.unlink(missing_ok=True)


def _write(path: Path, content: object, *, sync: bool) -> None:
    temporary = path.with_name(f"{path.name}.tmp")
    with open(temporary, "w") as out:
        json.dump(content, out)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    temporary.rename(path)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
