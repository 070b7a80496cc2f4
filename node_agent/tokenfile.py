"""The agent's bearer token, read from its file again whenever the file changes.

In a cluster the token is the pod's projected ServiceAccount token: kubelet rewrites it before it
expires (at 80% of its life, atomically: a new directory behind the `..data` symlink). A token read
once at start would be refused an hour later. So each request asks `TokenFile.get()`, which costs a
`stat` and reads the file only when what the path leads to changed (device, inode, size, mtime).
A file that cannot be read at that moment keeps the last token (logged): the controller's answer
then says whether it still holds.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("underlay.token")


class TokenFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._token = ""
        self.reads = 0
        self._token = self._read(self._stat(strict=True))

    def get(self) -> str:
        stat = self._stat(strict=False)
        if stat is None or stat == self._seen:
            return self._token
        with self._lock:
            if stat != self._seen:
                self._token = self._read(stat)
        return self._token

    def _stat(self, *, strict: bool) -> tuple[int, int, int, int] | None:
        try:
            found = os.stat(self.path)  # follows the symlinks: a swapped ..data is a new inode
        except OSError as err:
            if strict:
                raise
            log.warning("event=token-file-unreadable path=%s error=%s", self.path, err)
            return None
        return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)

    def _read(self, stat: tuple[int, int, int, int] | None) -> str:
        token = self.path.read_text().strip()
        self.reads += 1
        if self._seen is not None:
            log.info("event=token-reloaded path=%s", self.path)
        self._seen = stat
        return token
