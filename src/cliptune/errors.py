"""Error types that map onto the CLI's exit codes (0 ok, 1 runtime failure, 2 bad usage or invalid data)."""

from __future__ import annotations


def worker_message(message: str, cls: type) -> str:
    """The original message of an error raised in a DataLoader worker.

    Only an exception's type and formatted traceback cross from a worker to its parent, which raises
    `type("Caught X in DataLoader worker process N. Original Traceback ...")`; the user should read the message the
    worker raised (naming the file and row), not that traceback.
    """
    if not (message.startswith(f"Caught {cls.__name__} in DataLoader worker") and "Original Traceback" in message):
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]
    for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return message


class CliptuneError(Exception):
    """A runtime failure the user should read, not a traceback (exit code 1)."""

    exit_code = 1

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0], type(self)),)
        super().__init__(*args)


class UsageError(CliptuneError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class DataError(UsageError):
    """Invalid input data; always names the file and, where there is one, the row (exit code 2)."""

    def __init__(self, message: str, file: str | None = None, row: int | str | None = None):
        message = worker_message(message, type(self))
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
