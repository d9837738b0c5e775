"""Shared steps of the builders that turn installed pictures into an image–caption folder.

Every picture is composited onto white, centred on a square and resized (the emoji builder frames its glyphs the
same way), so that `lite`'s centre crop never cuts a drawing. Pixels are hashed after that normalisation: the hash
finds the same picture shipped twice, and proves that a pre-training set shares no picture with the emoji data.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cliptune.errors import CliptuneError


@dataclass
class Picture:
    """One output image: where it came from and every caption found for it."""

    source: Path
    captions: list[str] = field(default_factory=list)


def frame_square(image: Image.Image, size: int, margin: float = 0.04) -> Image.Image:
    """Composite onto white, crop to the ink, pad to a square with a small border and resize to `size`."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, rgba).convert("RGB")
    ink = _ink_box(flat)
    if ink is not None:
        flat = flat.crop(ink)
    side = max(flat.size)
    side += 2 * round(margin * side)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _ink_box(rgb: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels that are not (nearly) white."""
    grey = rgb.convert("L").point(lambda v: 255 if v < 250 else 0)
    return grey.getbbox()


def pixel_hash(image: Image.Image) -> str:
    """sha256 of the RGB pixels and the size: equal pictures, whatever file format carried them."""
    rgb = image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}|".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def clean_caption(text: str) -> str:
    """One line of lowercase words: separators become spaces, runs of spaces collapse."""
    text = text.replace("_", " ").replace("\n", " ").replace("\t", " ")
    return " ".join(text.split()).strip(" ,.;:-").lower()


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "caption"])
        writer.writerows(rows)


def staging_dir(out_dir: Path, marker: str, force: bool) -> Path:
    """A temporary folder next to `out_dir` for a build that is renamed into place when complete."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / marker).is_file() and not force:
        raise CliptuneError(f"{out_dir} exists, is not empty and is not a build of this kind; choose another "
                            "folder or pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Swap the finished build in; an older build is moved aside first, then removed."""
    tmp.chmod(0o755)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
