"""One run per folder: an exclusive OS file lock (`flock`) on `<folder>/.run.lock` holding the holder's pid,
host and start time. A second run fails at once naming both; a killed holder never leaves a stale lock (the
OS drops it with the process). POSIX only; on network file systems without `flock` support the lock may
not hold across machines. Import-light (no torch), so a start is refused before the heavy imports' cost.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mprd.train")

LOCK_NAME = ".run.lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder."""


class RunFolderLock:
    """Exclusive lock on `<folder>/.run.lock` (fcntl.flock), holding the holder's pid, host and start time."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock, said once
            log.warning("no run-folder lock on this platform: do not start two runs in %s", self.folder)
            return self

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.folder} is in use by another run ({holder}); wait for it to end, or choose "
                "another folder (hydra.run.dir=...)"
            ) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, never stale)
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
