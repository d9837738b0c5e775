"""Opening users' images: any file either becomes an upright RGB picture or a DataError that names it.

Photos carry their orientation in EXIF, icons carry alpha, scans come as CMYK or 16-bit grey; a model wants plain
8-bit RGB the way a person would see the file. Transparent pixels become white (what an image viewer shows), so a
black-on-transparent icon does not turn into a black square.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from cliptune.errors import DataError

MAX_PIXELS = 100_000_000  # ~10k x 10k; beyond this a file is a decompression bomb, not a training image
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow itself refuses files over twice this
BACKGROUND = (255, 255, 255)


def _composite(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, BACKGROUND)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _rescale(full_scale: float | None) -> Callable[[Image.Image], Image.Image]:
    """High-bit-depth grey to 8 bits by its nominal range (None: the image's own maximum, for float data)."""

    def convert(im: Image.Image) -> Image.Image:
        values = np.asarray(im, dtype=np.float64)
        top = full_scale or max(float(values.max()), 1.0)
        grey = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")

    return convert


def _plain(im: Image.Image) -> Image.Image:
    return im.convert("RGB")


# mode -> conversion to RGB; modes not listed go through Pillow's own convert (YCbCr, LAB, HSV, CMYK, 1, L, P ...)
TO_RGB: dict[str, Callable[[Image.Image], Image.Image]] = {
    "RGB": lambda im: im,
    "RGBA": _composite, "RGBa": _composite, "LA": _composite, "La": _composite, "PA": _composite,
    "I;16": _rescale(65535), "I;16L": _rescale(65535), "I;16B": _rescale(65535), "I;16N": _rescale(65535),
    "I": _rescale(65535),  # 32-bit int is how some readers hand over 16-bit data
    "F": _rescale(None),
}


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB; palette or grey images with a transparent colour are composited like alpha."""
    if im.mode in ("P", "L", "RGB") and "transparency" in im.info:
        return _composite(im)
    return TO_RGB.get(im.mode, _plain)(im)


def _too_large(im: Image.Image) -> str | None:
    width, height = im.size
    if width * height > MAX_PIXELS:
        return (f"image is {width}x{height} = {width * height:,} pixels, over the {MAX_PIXELS:,}-pixel limit "
                "(a decompression bomb or a scan far larger than any model input); downscale it")
    return None


def _failure(error: Exception) -> str:
    """One readable reason for whatever Pillow raised."""
    if isinstance(error, FileNotFoundError):
        return "image file not found"
    if isinstance(error, IsADirectoryError):
        return "image path is a folder, not a file"
    if isinstance(error, PermissionError):
        return "image file is not readable (permission denied)"
    if isinstance(error, Image.DecompressionBombError):
        return f"image refused as a decompression bomb: {error}"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read (unknown or corrupt file)"
    text = str(error) or type(error).__name__
    if "truncated" in text.lower():
        return f"image file is truncated ({text})"
    return f"cannot decode image: {text}"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully into an upright 8-bit RGB image, or raise DataError(file=path) saying why not."""
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            reason = _too_large(im)
            if reason is None:
                im.load()
                return to_rgb(_upright(im))
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "bad image"
        raise DataError(_failure(e), file=path) from e
    raise DataError(reason, file=path)


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block should not cost a readable picture."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        return im.copy()  # a copy: the caller closes the file behind `im`


def _cheap_decode(im: Image.Image) -> None:
    """Read every byte without paying for full-size pixels: JPEG decodes at 1/8 scale, PNG checks its CRCs."""
    if im.format == "JPEG":
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    elif im.format == "PNG":
        im.verify()
    else:
        im.load()


def check_image(path: str | os.PathLike) -> str | None:
    """Why `path` would fail to load (missing, not an image, truncated, too large), or None if it looks fine.

    Cheap enough to run over a whole dataset before training, and safe to call from several threads.
    """
    try:
        with Image.open(os.fspath(path)) as im:
            reason = _too_large(im)
            if reason is None:
                _cheap_decode(im)
            return reason
    except Exception as e:  # noqa: BLE001
        return _failure(e)
