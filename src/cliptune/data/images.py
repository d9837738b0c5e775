"""Opening users' images: any file either becomes an upright RGB picture or a DataError that names it.

Photos carry their orientation in EXIF, icons carry alpha, scans come as CMYK or 16-bit grey; a model wants plain
8-bit RGB the way a person would see the file. Transparent pixels become white (what an image viewer shows), so a
black-on-transparent icon does not turn into a black square.
"""

from __future__ import annotations

import io
import os
from typing import IO, Callable

import numpy as np
from PIL import Image, ImageOps

from cliptune.data.tar_members import MemberNotFound, is_member_ref, read_member
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
    if isinstance(error, MemberNotFound):
        return str(error)
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


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The raw bytes of an image file or of a `shard.tar#member` reference (OSError when missing)."""
    path = os.fspath(path)
    if is_member_ref(path):
        return read_member(path)
    with open(path, "rb") as f:
        return f.read()


def _source(path: str) -> str | IO[bytes]:
    """What Pillow should open: the path itself, or the member's bytes for `shard.tar#member`."""
    return io.BytesIO(read_member(path)) if is_member_ref(path) else path


def _decode(source: str | IO[bytes]) -> tuple[Image.Image | None, str | None]:
    with Image.open(source) as im:
        reason = _too_large(im)
        if reason is not None:
            return None, reason
        im.load()
        return to_rgb(_upright(im)), None


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` (a file, or `shard.tar#member` inside an uncompressed tar) fully into an upright 8-bit RGB
    image, or raise DataError(file=path) saying why not."""
    path = os.fspath(path)
    try:
        image, reason = _decode(_source(path))
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "bad image"
        raise DataError(_failure(e), file=path) from e
    if image is None:
        raise DataError(reason, file=path)
    return image


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """`load_image` for bytes already in memory (a streamed tar member); errors name `name`."""
    try:
        image, reason = _decode(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        raise DataError(_failure(e), file=name) from e
    if image is None:
        raise DataError(reason, file=name)
    return image


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block should not cost a readable picture."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        return im.copy()  # a copy: the caller closes the file behind `im`


def _decode_all(im: Image.Image, data: bytes) -> None:
    """Decode every byte as training will: a PNG's chunk checksums first (`verify`), then, on a fresh handle, its
    pixels, since checksums recomputed over a broken zlib stream pass `verify`; JPEG decodes at 1/8 scale, which
    still runs every compressed byte through the decoder, so it fails exactly where a full decode fails."""
    if im.format == "PNG":
        im.verify()
        with Image.open(io.BytesIO(data)) as again:
            again.load()
    elif im.format == "JPEG":
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    else:
        im.load()


def check_image(path: str | os.PathLike) -> str | None:
    """Why `path` would fail to load (missing, not an image, truncated, corrupt pixel data, too large), or None.

    Decodes the whole file (see `_decode_all`), and is safe to call from several threads.
    """
    try:
        return inspect_image(read_image_bytes(path))[0]
    except Exception as e:  # noqa: BLE001
        return _failure(e)


def inspect_image(source: bytes | str | os.PathLike) -> tuple[str | None, tuple[int, int] | None]:
    """(why it would fail to load or None, upright (width, height) or None), decoding every byte."""
    try:
        if not isinstance(source, bytes):
            source = read_image_bytes(source)
        with Image.open(io.BytesIO(source)) as im:
            size = _upright_size(im)
            reason = _too_large(im)
            if reason is None:
                _decode_all(im, source)
            return reason, size
    except Exception as e:  # noqa: BLE001
        return _failure(e), None


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """The size as shown: EXIF orientations 5-8 swap width and height. Read before decoding (a JPEG draft
    shrinks `size`); PNGs are taken as upright, since reading their EXIF first would spoil `verify`."""
    try:
        orientation = 1 if im.format == "PNG" else im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001
        orientation = 1
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else (im.width, im.height)
