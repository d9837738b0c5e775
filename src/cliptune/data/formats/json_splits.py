"""JSON with the splits spelled out (the Karpathy-split style):
`{"splits": {"train": [{"image_path", "caption" | "text" | "captions": [...], "id"?, "label"?}], "val": [...]}}`.

Rows are named `train[0]`, `val[3]`, ... (the list and 0-based index), which is where to look in the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from cliptune.data.formats import Format, register, resolve_image
from cliptune.data.formats._json import load_json
from cliptune.data.records import BadSample, Row
from cliptune.errors import DataError

IMAGE_KEYS = ("image_path", "image", "filepath", "file_name")
CAPTION_KEYS = ("captions", "caption", "text")
KNOWN_KEYS = set(IMAGE_KEYS) | set(CAPTION_KEYS) | {"id", "label"}
PREFIX_BYTES = 1 << 20  # how much of a big .json to scan for the "splits" key
SPLITS_KEY = re.compile(rb'"splits"\s*:')


def detect(path: Path) -> bool:
    """A .json file whose head mentions a "splits" key; only the first megabyte is read, so a large COCO file is
    not parsed just to be told apart, and a file with a syntax error still reaches the reader's precise message."""
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    with path.open("rb") as f:
        return bool(SPLITS_KEY.search(f.read(PREFIX_BYTES)))


def read(path: Path, image_root: Path | None = None) -> Iterator[Row | BadSample]:
    file = str(path)
    data = load_json(path)
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, dict):
        raise DataError('expected a top-level object {"splits": {"train": [...], "val": [...], ...}}', file=file)
    if not any(isinstance(entries, list) and entries for entries in splits.values()):
        raise DataError('"splits" holds no entries', file=file)
    root = Path(image_root) if image_root is not None else path.parent
    for split, entries in splits.items():
        if not isinstance(entries, list):
            raise DataError(f'"splits.{split}" must be a list of entries, got {type(entries).__name__}', file=file)
        for index, entry in enumerate(entries):
            yield _row(entry, split, root, file, f"{split}[{index}]")


def _first(entry: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    return next(((k, entry[k]) for k in keys if k in entry), (None, None))


def _row(entry: Any, split: str, root: Path, file: str, where: str) -> Row | BadSample:
    if not isinstance(entry, dict):
        return BadSample(file, where, f"expected an object, got {type(entry).__name__}")
    key, image = _first(entry, IMAGE_KEYS)
    if not isinstance(image, str) or not image.strip():
        return BadSample(file, where, f"missing or empty {IMAGE_KEYS[0]!r}")
    key, captions = _first(entry, CAPTION_KEYS)
    if key is None:
        return BadSample(file, where, 'no caption: expected "caption", "text" or "captions"')
    captions = captions if isinstance(captions, list) else [captions]
    if not all(isinstance(c, str) for c in captions):
        return BadSample(file, where, f"{key!r} must hold strings")
    meta = {k: v for k, v in entry.items() if k not in KNOWN_KEYS}
    entry_id = entry.get("id")
    return Row(image=resolve_image(image.strip(), root), captions=list(captions), file=file, row=where,
               label=entry.get("label"), split=split, id=None if entry_id is None else str(entry_id), meta=meta)


register(Format(name="json_splits", detect=detect, read=read))
