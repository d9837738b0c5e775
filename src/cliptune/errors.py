"""Error types that map onto the CLI's exit codes (0 ok, 1 runtime failure, 2 bad usage or invalid data)."""

from __future__ import annotations


class CliptuneError(Exception):
    """A runtime failure the user should read, not a traceback (exit code 1)."""

    exit_code = 1


class UsageError(CliptuneError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class DataError(UsageError):
    """Invalid input data; always names the file and, where there is one, the row (exit code 2)."""

    def __init__(self, message: str, file: str | None = None, row: int | str | None = None):
        self.file = file
        self.row = row
        self.reason = message
        where = ""
        if file is not None:
            where = f"{file}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(f"{where}{message}")


class ModelLoadError(UsageError):
    """A model spec that cannot be resolved (unknown name, hub id while offline, unsafe file)."""
