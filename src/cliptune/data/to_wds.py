"""Write any loaded dataset as WebDataset shards: `train-000000.tar`, `train-000001.tar`, `val-000000.tar`, ...

Each sample is `KEY.<image ext>` (the original bytes, unless re-encoded), `KEY.txt` (the first caption: what
open_clip and most WebDataset readers take) and `KEY.json` (`captions`: all of them, plus `label`, `id`, the
`source` image path and the record's metadata fields). Every shard is written to a temporary file, fsynced and
renamed, so a killed conversion never leaves a half shard that looks whole; shards of an earlier conversion into
the same folder that this one did not rewrite are removed, so the folder holds exactly this dataset.
`manifest.json` lists each split's brace pattern and counts.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from cliptune.data.images import load_image, read_image_bytes
from cliptune.data.records import Dataset, Record
from cliptune.data.splits import SPLITS
from cliptune.errors import DataError, UsageError
from cliptune.utils.atomic import fsync_dir

log = logging.getLogger(__name__)

EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp", ".gif": "gif",
              ".tif": "tiff", ".tiff": "tiff"}
PIL_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
REENCODE = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z]+)-(?P<index>\d{6})\.tar$")
MANIFEST = "manifest.json"
RESERVED_JSON_KEYS = {"captions", "caption", "label", "split", "id", "source"}


@dataclass
class SplitShards:
    split: str
    shards: list[str] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0

    @property
    def pattern(self) -> str:
        if len(self.shards) == 1:
            return self.shards[0]
        return f"{self.split}-{{000000..{len(self.shards) - 1:06d}}}.tar"


@dataclass
class ConversionResult:
    out_dir: Path
    splits: dict[str, SplitShards]
    removed: list[str] = field(default_factory=list)


def write_shards(dataset: Dataset, out_dir: str | Path, shard_size: int, reencode: str | None = None,
                 quality: int = 90, on_progress: Callable[[int], None] | None = None) -> ConversionResult:
    """Write `dataset` (one sample per record, i.e. per image) into `out_dir`; see the module docstring."""
    if shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, got {shard_size}")
    if reencode is not None and reencode not in REENCODE:
        raise UsageError(f"--reencode must be one of {', '.join(REENCODE)}, got {reencode!r}")
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality must be within 1..100, got {quality}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Record]] = {}
    for record in dataset.records:
        by_split.setdefault(record.split or "all", []).append(record)
    order = [s for s in SPLITS if s in by_split] + sorted(s for s in by_split if s not in SPLITS)

    result = ConversionResult(out, {})
    for split in order:
        records = by_split[split]
        info = result.splits[split] = SplitShards(split)
        for first in range(0, len(records), shard_size):
            name = f"{split}-{len(info.shards):06d}.tar"
            chunk = records[first:first + shard_size]
            info.bytes += _write_shard(out / name, split, first, chunk, reencode, quality)
            info.shards.append(name)
            info.samples += len(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    written = {name for info in result.splits.values() for name in info.shards}
    for name in sorted(os.listdir(out)):
        if SHARD_NAME.match(name) and name not in written:
            (out / name).unlink()
            result.removed.append(name)
    if result.removed:
        log.warning("%s: removed %d shard(s) of an earlier conversion: %s", out, len(result.removed),
                    ", ".join(result.removed))
    _write_atomic(out / MANIFEST, json.dumps({
        "format": "webdataset", "source": dataset.source,
        "splits": {s: {"pattern": i.pattern, "shards": len(i.shards), "samples": i.samples}
                   for s, i in result.splits.items()},
    }, indent=2).encode())
    fsync_dir(out)
    return result


def sample_key(split: str, index: int) -> str:
    return f"{split}_{index:08d}"


def _write_shard(path: Path, split: str, start: int, records: list[Record], reencode: str | None,
                 quality: int) -> int:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for offset, record in enumerate(records):
                    key = sample_key(split, start + offset)
                    ext, data = image_payload(record, reencode, quality)
                    _add(tar, f"{key}.{ext}", data)
                    _add(tar, f"{key}.txt", record.captions[0].encode("utf-8"))
                    _add(tar, f"{key}.json", json.dumps(_sample_json(record), ensure_ascii=False,
                                                        default=str).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def image_payload(record: Record, reencode: str | None, quality: int) -> tuple[str, bytes]:
    """(extension, bytes): the file as it is, or decoded upright and re-encoded."""
    where = record.where
    if reencode is not None:
        image = load_image(record.image)
        buffer = io.BytesIO()
        options = {"quality": quality} if reencode in ("jpg", "webp") else {}
        image.save(buffer, format=REENCODE[reencode], **options)
        return reencode, buffer.getvalue()
    try:
        data = read_image_bytes(record.image)
    except OSError as e:
        raise DataError(f"cannot read image {record.image}: {e.strerror or e}", file=where) from None
    ext = EXTENSIONS.get(os.path.splitext(record.image)[1].lower())
    if ext is None:  # no telling suffix: ask Pillow what the bytes are
        try:
            with Image.open(io.BytesIO(data)) as im:
                ext = PIL_EXTENSIONS.get(im.format or "")
        except Exception:  # noqa: BLE001
            ext = None
    if ext is None:
        raise DataError(f"cannot tell the image type of {record.image}; pass --reencode jpg", file=where)
    return ext, data


def _sample_json(record: Record) -> dict:
    payload: dict = {"captions": list(record.captions)}
    if record.label is not None:
        payload["label"] = record.label
    if record.id is not None:
        payload["id"] = record.id
    payload["source"] = record.image
    payload.update({k: v for k, v in record.meta.items() if k not in payload and k not in RESERVED_JSON_KEYS})
    return payload


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A member with fixed metadata, so the same dataset always gives byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
