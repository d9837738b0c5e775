"""Shared by the JSON formats: a cheap look at a file's head for detection, and one precise full parse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cliptune.errors import DataError

HEAD_BYTES = 1 << 20  # enough to see the first keys and first entries of any JSON dataset


def head(path: Path, size: int = HEAD_BYTES) -> bytes | None:
    """The first `size` bytes of a `.json` file (None for anything else): detectors look, they do not parse."""
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return None
    with path.open("rb") as f:
        return f.read(size)


def has_keys(text: bytes, *keys: str) -> bool:
    """Whether every `"key":` occurs in `text` (as an object key, not inside a string value)."""
    return all(re.search(rb'"' + re.escape(key.encode()) + rb'"\s*:', text) for key in keys)


def load_json(path: Path) -> Any:
    """The parsed file, or a DataError naming the file and, for syntax errors, line and column."""
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8", file=str(path)) from None
    except json.JSONDecodeError as e:
        if not e.doc.strip():
            raise DataError("file is empty", file=str(path)) from None
        raise DataError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=str(path)) from None


def expect_list(data: Any, key: str, file: str, shape: str) -> list:
    """`data[key]` as a list, or a DataError that shows the expected `shape`."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        found = f"a {type(value).__name__}" if isinstance(data, dict) and key in data else "nothing"
        raise DataError(f'expected {shape}; "{key}" holds {found}', file=file)
    return value
