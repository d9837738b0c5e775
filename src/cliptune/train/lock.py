"""One training process per run directory: `train.lock` holds the owner's pid, host and process start time. A second
process is refused; a lock left by a killed process (its pid no longer runs on this host, or now names a process
started at another time) is stale and taken over."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from cliptune.errors import UsageError

LOCK_FILE = "train.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid from its owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # being written, or torn by a kill: treated as stale below

    def stale(self, holder: dict) -> bool:
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int):
            return True
        if host != socket.gethostname():
            return False  # another machine's process: cannot be checked from here
        started = holder.get("started")
        return not _alive(pid) or (started is not None and _start_time(pid) not in (None, started))

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if not self.stale(holder):
                    raise UsageError(f"{self.path.parent} is being trained by process {holder.get('pid')} on "
                                     f"{holder.get('host')}; wait for it to end (or, if it is gone, remove "
                                     f"{self.path})") from None
                self.path.unlink(missing_ok=True)  # left by a killed process
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": _start_time(os.getpid())}, fh)
            self.held = True
            return self
        raise UsageError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
