"""Source formats: each module in this package registers one `Format` in `FORMATS`.

A format only turns a source into rows; checking captions, labels, splits and images happens once, for every
format, in `cliptune.data.load`. So a reader puts `label` and `split` into the row as found (a string is fine: the
loader turns labels into ints and split aliases into train/val/test, and reports what it cannot). A reader yields a
`BadSample` for a row it cannot make sense of (a missing field, a wrong field count) so that `--on-bad-sample`
governs it like any other bad row, and raises `DataError` only for problems that spoil the whole source
(unreadable file, missing header, invalid JSON).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cliptune.data.records import BadSample, Row
from cliptune.errors import DataError
from cliptune.utils.registry import Registry

Reader = Callable[..., Iterable["Row | BadSample"]]  # (path, image_root, **options) -> rows and bad samples


@dataclass(frozen=True)
class Format:
    """How to recognise a source (`detect`) and read it (`read(path, image_root)` → rows and bad samples).

    `local_images` is False for formats whose `Row.image` is a key inside an archive rather than a file on disk,
    so the loader does not look for it on disk. `priority` breaks ties when two detectors claim the same path.
    `options` names the keyword options `read` accepts (`load_dataset(format_options=...)`).
    """

    name: str
    detect: Callable[[Path], bool]
    read: Reader
    local_images: bool = True
    priority: int = 0
    options: tuple[str, ...] = ()


FORMATS: Registry[Format] = Registry("data format")


def register(fmt: Format) -> Format:
    """Register a format under its own name (one line at the bottom of each format module)."""
    return FORMATS.register(fmt.name)(fmt)


def detect_format(path: str | Path) -> str:
    """Name of the format that claims `path`; a clear DataError when none does (e.g. a typo in the path)."""
    path = Path(path)
    claims = [FORMATS.get(name) for name in FORMATS.names()]
    matches = [fmt for fmt in claims if _safe_detect(fmt, path)]
    if matches:
        return max(matches, key=lambda fmt: fmt.priority).name
    known = ", ".join(FORMATS.names())
    if not path.exists():
        raise DataError(f"no such file or folder (known formats: {known})", file=str(path))
    raise DataError(f"cannot tell the data format; pass --format (one of: {known})", file=str(path))


def _safe_detect(fmt: Format, path: Path) -> bool:
    """A detector that trips over an odd file must not hide the other formats' answers."""
    try:
        return bool(fmt.detect(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def resolve_image(image_path: str, root: Path) -> str:
    """Absolute, normalised image path: relative paths are taken from `root` (the source's folder by default)."""
    expanded = os.path.expanduser(image_path)
    return os.path.abspath(os.path.join(root, expanded))


def _discover() -> None:
    """Import every format module here, so that adding a format is adding a file (plus its `register` line)."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()

__all__ = ["FORMATS", "Format", "Reader", "detect_format", "register", "resolve_image"]
