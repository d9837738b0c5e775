"""Crash-safe writes: a file is written under a temporary name, flushed to disk and renamed into place, so a reader
(or a kill at any moment) sees either the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, which races with other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def usual_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give: temporary files start private (0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temp_path)` to fill a temporary file next to `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, usual_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on `directory`, so two writers do not both extend the same version of an index."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; writes stay atomic, concurrent writers are the user's care
        yield
        return
    with open(Path(directory) / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["fsync_dir", "locked", "usual_mode", "write_atomic", "write_text_atomic"]


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """`payload` as indented JSON, written atomically (parent folders created)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
