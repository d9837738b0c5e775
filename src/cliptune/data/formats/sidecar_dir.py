"""A folder of images with a caption file next to each: `cat.jpg` + `cat.txt` (one caption per non-empty line)
+ optional `cat.json` (`label`, `split`, `captions`, `id`, anything else kept as metadata).

Top-level `train/`, `val/`, `test/` subfolders are the splits; other subfolders are just organisation. Rows are
named by the image's path relative to the folder, e.g. `train/cat.jpg`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

from cliptune.data.formats import Format, register
from cliptune.data.records import BadSample, Row
from cliptune.data.splits import normalize_split
from cliptune.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
META_KEYS = {"label", "split", "captions", "id"}

log = logging.getLogger(__name__)


def detect(path: Path) -> bool:
    return path.is_dir()


def read(path: Path, image_root: Path | None = None) -> Iterator[Row | BadSample]:
    """`image_root` is ignored: images are wherever their caption files are."""
    folder = str(path)
    images, texts = _scan(path)
    if not images:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in the folder", file=folder)
    captioned = set()
    for image in images:
        rel = image.relative_to(path).as_posix()
        captioned.add(image.with_suffix(".txt"))
        yield _row(image, rel, path, folder)
    orphans = sorted(t.relative_to(path).as_posix() for t in texts if t not in captioned)
    if orphans:  # could be a README as well as a caption whose image is gone: say so, do not fail on it
        log.warning("%s: %d .txt file(s) have no image next to them, e.g. %s", folder, len(orphans), orphans[0])


def _scan(path: Path) -> tuple[list[Path], list[Path]]:
    """All images and .txt files under `path`, sorted, skipping hidden files and folders (.DS_Store, ._x.jpg)."""
    images, texts = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(Path(dirpath, name))
            elif suffix == ".txt":
                texts.append(Path(dirpath, name))
    return images, texts


def _folder_split(rel: str) -> str | None:
    """`train/x.jpg` → "train"; a top-level folder that is not a split name gives no split."""
    return _split_or_none(rel.split("/", 1)[0]) if "/" in rel else None


def _split_or_none(name: object) -> str | None:
    try:
        return normalize_split(name)
    except ValueError:
        return None


def _row(image: Path, rel: str, root: Path, folder: str) -> Row | BadSample:
    txt, meta_file = image.with_suffix(".txt"), image.with_suffix(".json")
    captions: list[str] = []
    if txt.is_file():
        try:
            captions = [line for line in txt.read_bytes().decode("utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            return BadSample(folder, rel, f"{txt.name} is not valid UTF-8 (byte 0x{e.object[e.start]:02x}); "
                                          "save it as UTF-8")
    meta: dict = {}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_bytes().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as e:
            return BadSample(folder, rel, f"{meta_file.name} is not valid JSON: {e}")
        if not isinstance(meta, dict):
            return BadSample(folder, rel, f"{meta_file.name} must hold a JSON object")
    extra = meta.get("captions", [])
    extra = extra if isinstance(extra, list) else [extra]
    if not all(isinstance(c, str) for c in extra):
        return BadSample(folder, rel, f'"captions" in {meta_file.name} must hold strings')
    captions += [c for c in extra if c not in captions]
    if not txt.is_file() and not extra:
        return BadSample(folder, rel, f"no caption file {txt.relative_to(root).as_posix()}")
    split = _folder_split(rel)
    if split is not None and meta.get("split") is not None and _split_or_none(meta["split"]) != split:
        return BadSample(folder, rel, f"{meta_file.name} says split {meta['split']!r} but the image is in {split}/")
    entry_id = meta.get("id")
    return Row(image=str(image.absolute()), captions=captions, file=folder, row=rel, label=meta.get("label"),
               split=split if split is not None else meta.get("split"),
               id=None if entry_id is None else str(entry_id),
               meta={k: v for k, v in meta.items() if k not in META_KEYS})


register(Format(name="sidecar_dir", detect=detect, read=read))
