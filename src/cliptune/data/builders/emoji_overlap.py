"""Proof that a pre-training set shares no picture with the emoji evaluation data.

Three checks per candidate picture, each against every image of an emoji build (`cliptune data build emoji`):
the source file's sha256, the sha256 of its pixels (as decoded, and framed and resized like an emoji image), and a
64-bit difference hash (dHash) of both framed the same way within `NEAR` bits — the last catches the same drawing
re-encoded or rescaled.
A picture that matches any of them is dropped and counted; the counts go into the build's info file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cliptune.data.builders.framing import file_hash, frame_square, pixel_hash

NEAR = 2  # dHash bits that may differ for two pictures to count as the same drawing
EMOJI_SIZE = 72  # the emoji builder's default image side


def dhash(image: Image.Image) -> int:
    """Difference hash: is each pixel of a 9×8 grey thumbnail brighter than its right neighbour (64 bits)."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


@dataclass
class OverlapReport:
    """What the check compared and what it dropped (file names relative to the source root)."""

    emoji_images: int = 0
    checked: int = 0
    same_file: list[str] = field(default_factory=list)
    same_pixels: list[str] = field(default_factory=list)
    near_duplicate: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # not checked and not kept

    def as_dict(self) -> dict:
        return {"emoji_images": self.emoji_images, "checked": self.checked, "near_bits": NEAR,
                "same_file": self.same_file, "same_pixels": self.same_pixels, "near_duplicate": self.near_duplicate,
                "unreadable_not_kept": self.unreadable}


class EmojiFingerprints:
    """File hashes, pixel hashes and dHashes of every image of an emoji build."""

    def __init__(self, emoji_dir: Path):
        csv_path = Path(emoji_dir) / "emoji.csv"
        with csv_path.open(encoding="utf-8", newline="") as fh:
            names = sorted({row["image_path"] for row in csv.DictReader(fh)})
        self.count = len(names)
        self.files: set[str] = set()
        self.pixels: set[str] = set()
        hashes = []
        for name in names:
            path = Path(emoji_dir) / name
            self.files.add(file_hash(path))
            with Image.open(path) as im:
                image = im.convert("RGB")
            canon = frame_square(image, EMOJI_SIZE)
            self.pixels.add(pixel_hash(image))
            self.pixels.add(pixel_hash(canon))
            hashes.append(dhash(canon))
        self.dhashes = np.array(hashes, dtype=np.uint64)

    def nearest_bits(self, image: Image.Image) -> int:
        """Fewest differing dHash bits between `image` and any emoji image."""
        if not len(self.dhashes):
            return 64
        xor = self.dhashes ^ np.uint64(dhash(image))
        return int(np.unpackbits(xor.view(np.uint8)).reshape(len(xor), 64).sum(axis=1).min())

    def verdict(self, source: Path, image: Image.Image) -> str | None:
        """'same_file', 'same_pixels', 'near_duplicate' or None (no overlap) for one picture as decoded."""
        if file_hash(source) in self.files:
            return "same_file"
        canon = frame_square(image, EMOJI_SIZE)  # framed exactly as the emoji images were
        if pixel_hash(image) in self.pixels or pixel_hash(canon) in self.pixels:
            return "same_pixels"
        if self.nearest_bits(canon) <= NEAR:
            return "near_duplicate"
        return None
