"""Daemons of the rig and the lab: started detached with a pidfile, stopped and waited for."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from deploy.lab import netns


PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def start_daemon(argv: Sequence[str], *, pidfile: Path, logfile: Path, ns: str | None = None,
                 env: dict[str, str] | None = None, die_with_parent: bool = False) -> int:
    """Start `argv` (inside namespace `ns`) in its own session, output to `logfile`; return its pid.

    The daemon outlives the command that started it (the lab's `up` exits, its daemons stay), so
    it gets its own session and no terminal; `ip netns exec` execs, so the pid is the daemon's.
    `die_with_parent` is for daemons of a test session instead: the kernel kills them when the thread
    that started them dies, so even a SIGKILLed pytest leaves nothing running.
    """
    command = netns.exec_argv(ns, argv) if ns else list(argv)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env,
                                preexec_fn=_die_with_parent if die_with_parent else None)
    pidfile.write_text(str(proc.pid))
    return proc.pid


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG)."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def stop_pidfile(pidfile: Path, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 5) -> None:
    """Signal the process named in `pidfile` and every process of the group it leads, and wait until
    they are gone (SIGKILL after `timeout`).

    The group matters for User-Mode Linux: one instance is many host processes (its kernel, and one
    per process inside), and a kernel killed alone leaves the others behind."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    for member in _members(pid):
        _signal(member, sig)
    deadline = time.monotonic() + timeout
    while members := _members(pid):
        if time.monotonic() > deadline:
            for member in members:
                _signal(member, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.02)
    pidfile.unlink(missing_ok=True)


def _members(pid: int) -> list[int]:
    """`pid` and the processes of the group it leads, zombies left out (gone for our purpose)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(") ", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):  # ESRCH: exiting right now
            continue
        if state != "Z" and pid in (int(stat.parent.name), int(group)):
            members.append(int(stat.parent.name))
    return members


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_until(probe: Callable[[], T], *, timeout: float, what: str | Callable[[], str],
               error: type[Exception] = TimeoutError) -> T:
    """Poll `probe` until it returns something true, and return that; after `timeout` seconds raise
    `error` naming `what` (a callable is asked only then, so it can say why, e.g. the last event)."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for the {what() if callable(what) else what}")
        time.sleep(0.05)
    return result
