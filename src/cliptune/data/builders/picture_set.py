"""Write a list of (installed picture, captions) as an image–caption folder, checked against the emoji data.

Shared by the `openclipart` and `icons` builders: frame every picture (framing.py), merge pictures whose pixels are
identical (their captions are pooled), drop every picture that matches an emoji image (emoji_overlap.py), write
`<name>.csv` (one row per caption) and `<name>.json` (counts, provenance, the overlap report). The build happens in
a temporary folder renamed into place, so an interrupted build never looks complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from cliptune.data.builders.emoji_overlap import EmojiFingerprints, OverlapReport
from cliptune.data.builders.framing import frame_square, move_into_place, pixel_hash, staging_dir, write_rows

log = logging.getLogger(__name__)
MAX_PIXELS = 40_000_000  # a few installed PNGs are posters of 200+ megapixels: skipped and listed, not decoded


def debian_version(package: str) -> str | None:
    """The installed version of a Debian package, for the provenance record (None where dpkg is absent)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              check=False)
    except OSError:
        return None
    return done.stdout.strip() or None


def _output_name(source: Path, root: Path) -> str:
    return "__".join(source.relative_to(root).with_suffix(".png").parts)


def write_picture_set(items: list[tuple[Path, list[str]]], out_dir: Path, name: str, root: Path,
                      emoji: EmojiFingerprints, size: int, provenance: dict, progress: bool = True,
                      force: bool = False) -> Path:
    """Build `out_dir/<name>.csv` from `items` (see module doc) and return its path."""
    out_dir = Path(out_dir)
    target = out_dir / f"{name}.csv"
    if target.is_file() and not force:
        return target
    started = time.perf_counter()
    tmp = staging_dir(out_dir, f"{name}.json", force)
    try:
        report = OverlapReport(emoji_images=emoji.count)
        kept, merged = _frame_all(items, tmp, root, emoji, size, report, progress)
        rows = [(file, caption) for file, captions in kept.items() for caption in captions]
        write_rows(tmp / f"{name}.csv", rows)
        info = {**provenance, "images": len(kept), "captions": len(rows), "size": size,
                "merged_identical": merged, "emoji_overlap": report.as_dict(),
                "seconds": round(time.perf_counter() - started, 1)}
        (tmp / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: %d images, %d captions in %s", name, len(kept), len(rows), out_dir)
    return target


def _open_rgba(source: Path) -> Image.Image | None:
    """The decoded picture, or None for a file Pillow refuses (corrupt, or over MAX_PIXELS when decoded)."""
    try:
        with Image.open(source) as im:
            if im.width * im.height > MAX_PIXELS:
                return None
            return im.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _frame_all(items, folder: Path, root: Path, emoji: EmojiFingerprints, size: int, report: OverlapReport,
               progress: bool) -> tuple[dict[str, list[str]], int]:
    """Framed pictures written to `folder`: {file name: captions}, and how many identical ones were merged."""
    kept: dict[str, list[str]] = {}
    unreadable = report.unreadable
    by_pixels: dict[str, str] = {}
    merged = 0
    for source, captions in tqdm(items, desc="framing pictures", unit="img", disable=not progress):
        image = _open_rgba(source)
        if image is None:
            unreadable.append(str(source.relative_to(root)))
            continue
        report.checked += 1
        verdict = emoji.verdict(source, image)
        if verdict is not None:
            getattr(report, verdict).append(str(source.relative_to(root)))
            continue
        framed = frame_square(image, size)
        digest = pixel_hash(framed)
        if digest in by_pixels:
            first = kept[by_pixels[digest]]
            first.extend(c for c in captions if c not in first)
            merged += 1
            continue
        file = _output_name(source, root)
        framed.save(folder / file)
        by_pixels[digest] = file
        kept[file] = list(captions)
    return kept, merged
