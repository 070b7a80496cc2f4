"""What the per-machine builds (deploy/k8s/build.py, deploy/image/) share: one builder at a time, and
progress lines while a long step runs.

A build runs once per machine even when several test sessions ask for it at once: callers take an
exclusive file lock in the cache directory and look again after getting it. A long step's output goes
to a log file (kept for the failure message), and a line saying how far it got is printed now and then,
so a ten-minute step is not ten silent minutes.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

Log = Callable[[str], None]
PROGRESS_EVERY = 60.0  # seconds between progress lines of a running step


def cache_dir(name: str, *, override: str, environ: Mapping[str, str] = os.environ) -> Path:
    """~/.cache/underlay/`name`, where one build keeps its results; `$override` moves it."""
    return Path(environ.get(override) or Path.home() / ".cache" / "underlay" / name)


@contextmanager
def locked(lockfile: Path, *, log: Log, what: str) -> Iterator[None]:
    """Hold `lockfile` exclusively, saying so when another process holds it (and `what` it does)."""
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    with open(lockfile, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{what}: another process is building into {lockfile.parent}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_logged(argv: Sequence[str], *, log_file: Path, status: Callable[[str], str], log: Log,
               cwd: Path | None = None, env: Mapping[str, str] | None = None,
               every: float = PROGRESS_EVERY) -> int:
    """Run `argv` with its output in `log_file`; every `every` seconds log `status(output so far)`.
    Return the exit status. An interrupted caller leaves no child behind."""
    started = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(every):
            log(f"{status(log_file.read_text(errors='replace'))}, {elapsed(started)}")

    with open(log_file, "w") as output:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env),
                                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        reporter.join()


def tail(log_file: Path, *, lines: int = 30, keep: Callable[[str], bool] = bool) -> str:
    """The last `lines` lines of `log_file` that `keep` accepts: what a failure message quotes."""
    kept = [line for line in log_file.read_text(errors="replace").splitlines() if keep(line)]
    return "\n".join(kept[-lines:]) or "(no error output)"


def elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"
