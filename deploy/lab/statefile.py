"""A JSON state file that many commands change at once: locked read-modify-write, atomic replace.

`underlay-lab pod add` may run twenty times at once (a shell loop with `&`). Each command reads the
lab's description, spends seconds in a CNI ADD, and writes it back: without a lock the last writer
wins and the others' pods vanish from the file while their namespaces and allocations live on.

So a change holds an exclusive `flock(2)` on a lock file beside the state for its read-modify-write
only (never across the slow work), and the new content is written to a temporary file of its own,
flushed to disk and renamed over the old one: a reader without the lock sees the old or the new
file whole, never a half-written one. flock locks die with their process, so a command killed
mid-change leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (made if missing) for the body; waits for other holders."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomically(path: Path, data: Any) -> None:
    """`data` as JSON in `path`, replacing it in one rename; the temporary file is unique per writer."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
