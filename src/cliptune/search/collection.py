"""What gets indexed: records from a data spec, or every picture in a folder, checked before any embedding starts
so a broken file is reported (or, with on_bad_sample="skip", counted) up front instead of failing mid-run."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cliptune.data.images import check_image
from cliptune.data.load import BAD_SAMPLE_POLICIES
from cliptune.data.records import BadSample, Record
from cliptune.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CHECK_THREADS = min(16, 4 * (os.cpu_count() or 1))

Source = Record | str | os.PathLike


def image_files(folder: str | os.PathLike) -> list[str]:
    """Absolute paths of the pictures under `folder` (recursively, sorted, hidden files and folders left out)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError("not a folder", file=str(root))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.abspath(os.path.join(dirpath, name)) for name in sorted(filenames)
                     if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES)
    if not found:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in the folder", file=str(root))
    return found


def as_records(sources: Iterable[Source]) -> list[Record]:
    """Records from records or paths; one record per image, the first occurrence kept, later captions merged."""
    by_path: dict[str, Record] = {}
    for source in sources:
        if isinstance(source, Record):
            record = Record(image=os.path.abspath(source.image), captions=list(source.captions),
                            sources=list(source.sources))
        else:
            path = os.path.abspath(os.fspath(source))
            record = Record(image=path, captions=[], sources=[(path, None)])  # a bare file has no row
        seen = by_path.setdefault(record.image, record)
        if seen is not record:
            seen.captions.extend(c for c in record.captions if c not in seen.captions)
    return list(by_path.values())


def checked(records: list[Record], on_bad_sample: str = "error") -> tuple[list[Record], list[BadSample]]:
    """The records whose image decodes, and the problems, handled by the `on_bad_sample` policy."""
    policy = BAD_SAMPLE_POLICIES.get(on_bad_sample)
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check-image") as pool:
        reasons = list(pool.map(lambda record: check_image(record.image), records))
    good, problems = [], []
    for record, reason in zip(records, reasons):
        if reason is None:
            good.append(record)
        else:
            file, row = record.sources[0] if record.sources else (record.image, None)
            where = "" if file == record.image else f": {record.image}"
            problems.append(BadSample(file, row, f"{reason}{where}"))
    policy.apply(problems, "images to index")
    return good, problems


__all__ = ["IMAGE_SUFFIXES", "as_records", "checked", "image_files"]
