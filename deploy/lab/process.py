"""Daemons of the rig and the lab: started detached with a pidfile, stopped and waited for."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.lab import netns


def start_daemon(argv: Sequence[str], *, pidfile: Path, logfile: Path, ns: str | None = None,
                 env: dict[str, str] | None = None) -> int:
    """Start `argv` (inside namespace `ns`) in its own session, output to `logfile`; return its pid.

    The daemon outlives the command that started it (the lab's `up` exits, its daemons stay), so
    it gets its own session and no terminal; `ip netns exec` execs, so the pid is the daemon's.
    """
    command = netns.exec_argv(ns, argv) if ns else list(argv)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    pidfile.write_text(str(proc.pid))
    return proc.pid


def stop_pidfile(pidfile: Path, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 5) -> None:
    """Signal the process named in `pidfile` and wait until it is gone (SIGKILL after `timeout`)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if not _signal(pid, sig):
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.02)
    pidfile.unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie is gone for our purpose
    except (FileNotFoundError, ProcessLookupError, IndexError):  # ESRCH: exiting right now
        return False
