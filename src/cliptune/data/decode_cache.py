"""Decode each image once: later epochs read it already resized to the model's input size, as raw uint8.

Decoding a 12-megapixel JPEG costs tens of milliseconds; reading 224×298×3 bytes back costs tens of
microseconds. The first pass stores every image with its shorter side resized to `size` exactly as torchvision's
`Resize(size)` (bicubic, same output size rule) would, so the model's own eval transform then finds nothing to
resize and produces the same pixels it would from the original file, and a random crop still has the full
aspect ratio to work with. Entries are `.npy` files named by a hash of (path, file size, mtime, target size,
resampling): a changed file, model size or resampling is a new entry, never a stale one. Writes are atomic
(temp + rename), so DataLoader workers can fill the cache side by side. On disk it takes about
`n × size × size × aspect × 3` bytes (10k images at 224 px, 4:3: ~2 GB; at 128 px: ~650 MB).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cliptune.data.images import load_image
from cliptune.data.tar_members import stat_key

RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
              "lanczos": Image.Resampling.LANCZOS}
VERSION = 1


def default_decode_cache_dir() -> Path:
    return Path(os.environ.get("CLIPTUNE_CACHE", Path.home() / ".cache" / "cliptune")) / "decoded"


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side `size`, the longer truncated as torchvision's Resize(int) computes it."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


class DecodeCache:
    """`cache(path) -> PIL image`, shorter side `size`; a drop-in for `load_image` in `ImageFiles(loader=...)`."""

    def __init__(self, root: str | Path | None = None, size: int = 224, resample: str = "bicubic"):
        if resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}")
        self.root = Path(root) if root is not None else default_decode_cache_dir()
        self.size = int(size)
        self.resample = resample
        self.hits = 0
        self.misses = 0

    def key(self, path: str) -> str:
        raw = f"v{VERSION}|{stat_key(os.fspath(path))}|{self.size}|{self.resample}"
        return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()

    def entry(self, path: str) -> Path:
        key = self.key(path)
        return self.root / key[:2] / f"{key}.npy"

    def __call__(self, path: str | os.PathLike) -> Image.Image:
        return self.load(path)

    def load(self, path: str | os.PathLike) -> Image.Image:
        """The resized image, from the cache when present; decode errors are load_image's DataError."""
        path = os.fspath(path)
        try:
            entry = self.entry(path)
        except OSError:
            return load_image(path)  # missing file: let load_image say so, naming it
        if entry.is_file():
            try:
                pixels = np.load(entry, allow_pickle=False)
                self.hits += 1
                return Image.fromarray(pixels, "RGB")
            except (OSError, ValueError):  # a damaged entry is recomputed, never trusted
                entry.unlink(missing_ok=True)
        self.misses += 1
        image = self.resize(load_image(path))
        self._store(entry, np.asarray(image, dtype=np.uint8))
        return image

    def resize(self, image: Image.Image) -> Image.Image:
        target = resized_size(image.width, image.height, self.size)
        if target == image.size:
            return image
        return image.resize(target, RESAMPLING[self.resample])

    def _store(self, entry: Path, pixels: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}-{id(pixels)}")
        try:
            with open(tmp, "wb") as f:
                np.save(f, pixels, allow_pickle=False)
            os.replace(tmp, entry)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full or read-only disk costs speed, not the run
