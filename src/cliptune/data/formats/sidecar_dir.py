"""A folder of images with a caption file next to each: `cat.jpg` + `cat.txt` (one caption per non-empty line)
+ optional `cat.json` (`label`, `split`, `captions`, `id`, anything else kept as metadata).

Top-level `train/`, `val/`, `test/` subfolders are the splits; other subfolders are just organisation. Rows are
named by the image's path relative to the folder, e.g. `train/cat.jpg`. Extensions match in any case (`CAT.JPG`
with `CAT.TXT` or `cat.Json`), and symlinked folders are followed like real ones; a symlink that leads back to a
folder on its own path is a loop, and an error naming it.
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
    listing, texts = _scan(path)
    images = [image for image, _ in listing]
    if not images:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in the folder", file=folder)
    captioned: set[Path] = set()
    for image, sidecars in listing:
        rel = image.relative_to(path).as_posix()
        captioned.update(sidecars.get(".txt", []))
        yield _row(image, rel, path, folder, sidecars)
    orphans = sorted(t.relative_to(path).as_posix() for t in texts if t not in captioned)
    if orphans:  # could be a README as well as a caption whose image is gone: say so, do not fail on it
        log.warning("%s: %d .txt file(s) have no image next to them, e.g. %s", folder, len(orphans), orphans[0])


Sidecars = dict[str, list[Path]]  # lower-case extension (".txt", ".json") -> files with the image's stem


def _scan(path: Path) -> tuple[list[tuple[Path, Sidecars]], list[Path]]:
    """Every image under `path` (sorted, depth first) with its sidecar files, and every .txt file; hidden files
    and folders (.DS_Store, ._x.jpg) are skipped."""
    listing, texts = [], []
    for folder, names in _walk(path):
        by_stem: dict[str, Sidecars] = {}
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in (".txt", ".json"):
                by_stem.setdefault(stem, {}).setdefault(suffix.lower(), []).append(folder / name)
            if suffix.lower() == ".txt":
                texts.append(folder / name)
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                listing.append((folder / name, by_stem.get(stem, {})))
    return listing, texts


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, sorted visible file names) for `root` and each visible subfolder, depth first, following symlinked
    folders; a folder whose real path is already on the way down to it is a symlink loop (DataError)."""
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, (os.path.realpath(root),))]
    while stack:
        folder, chain = stack.pop()
        try:
            entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"cannot list folder {folder}: {e.strerror or e}", file=str(root)) from None
        # a broken symlink is listed as a file, so an image it names is reported missing, not silently dropped
        yield folder, [e.name for e in entries if e.is_file() or (e.is_symlink() and not e.is_dir())]
        subfolders = []
        for entry in (e for e in entries if e.is_dir()):
            real = os.path.realpath(entry.path)
            if real in chain:
                raise DataError(f"symlink loop: {Path(entry.path).relative_to(root).as_posix()} leads back to "
                                f"{real}, a folder it is inside of; remove or fix the link", file=str(root))
            subfolders.append((Path(entry.path), chain + (real,)))
        stack.extend(reversed(subfolders))


def _folder_split(rel: str) -> str | None:
    """`train/x.jpg` → "train"; a top-level folder that is not a split name gives no split."""
    return _split_or_none(rel.split("/", 1)[0]) if "/" in rel else None


def _split_or_none(name: object) -> str | None:
    try:
        return normalize_split(name)
    except ValueError:
        return None


def _sidecar(sidecars: Sidecars, suffix: str, rel: str, folder: str) -> Path | BadSample | None:
    found = sidecars.get(suffix, [])
    if len(found) > 1:
        return BadSample(folder, rel, f"{len(found)} {suffix} files differ only in case: "
                                      f"{', '.join(p.name for p in found)}; keep one")
    return found[0] if found else None


def _row(image: Path, rel: str, root: Path, folder: str, sidecars: Sidecars) -> Row | BadSample:
    txt, meta_file = _sidecar(sidecars, ".txt", rel, folder), _sidecar(sidecars, ".json", rel, folder)
    for found in (txt, meta_file):
        if isinstance(found, BadSample):
            return found
    captions: list[str] = []
    if txt is not None:
        try:
            captions = [line for line in txt.read_bytes().decode("utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            return BadSample(folder, rel, f"{txt.name} is not valid UTF-8 (byte 0x{e.object[e.start]:02x}); "
                                          "save it as UTF-8")
    meta: dict = {}
    if meta_file is not None:
        try:
            meta = json.loads(meta_file.read_bytes().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as e:
            return BadSample(folder, rel, f"{meta_file.name} is not valid JSON: {e}")
        if not isinstance(meta, dict):
            return BadSample(folder, rel, f"{meta_file.name} must hold a JSON object")
    extra = meta.get("captions", [])
    extra = extra if isinstance(extra, list) else [extra]
    if not all(isinstance(c, str) for c in extra):
        return BadSample(folder, rel, f'"captions" in {meta_file.name} must hold strings')  # type: ignore[union-attr]
    captions += [c for c in extra if c not in captions]
    if txt is None and not extra:
        return BadSample(folder, rel, f"no caption file {image.with_suffix('.txt').relative_to(root).as_posix()}")
    split = _folder_split(rel)
    if split is not None and meta.get("split") is not None and _split_or_none(meta["split"]) != split:
        return BadSample(folder, rel, f"{meta_file.name} says split {meta['split']!r} but the image is in "  # type: ignore[union-attr]
                                      f"{split}/")
    entry_id = meta.get("id")
    return Row(image=str(image.absolute()), captions=captions, file=folder, row=rel, label=meta.get("label"),
               split=split if split is not None else meta.get("split"),
               id=None if entry_id is None else str(entry_id),
               meta={k: v for k, v in meta.items() if k not in META_KEYS})


register(Format(name="sidecar_dir", detect=detect, read=read))
