"""Decoding uploaded pictures within a pixel budget sized for the model.

A compressed file says little about its decoded size: a 300 KB PNG can hold 10,000 × 10,000 pixels (300 MB as RGB).
The model sees `image_size` pixels a side, so the server refuses anything over `pixel_limit` pixels, read from the
header before a pixel is decoded. The default, `default_pixel_limit(image_size)`, allows 16× the model's side (at
least 2048 px a side): 3584 × 3584 ≈ 12.8 MP for a 224 px model, enough for screenshots and scans. JPEGs, which can
be decoded at 1/2, 1/4 or 1/8 scale for free (Pillow's `draft`), are first reduced towards twice the model's side,
so ordinary camera photos of any size are accepted at a fraction of their memory.
"""

from __future__ import annotations

import io

from fastapi import HTTPException, UploadFile
from PIL import Image, ImageOps

from cliptune.data.images import to_rgb

PIXEL_LIMIT_SIDE_FACTOR = 16  # the largest side accepted, in multiples of the model's input side
MIN_PIXEL_LIMIT_SIDE = 2048


def default_pixel_limit(image_size: int) -> int:
    side = max(PIXEL_LIMIT_SIDE_FACTOR * int(image_size), MIN_PIXEL_LIMIT_SIDE)
    return side * side


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not cost a readable picture
        return image.copy()


def decode_bytes(data: bytes, pixel_limit: int, image_size: int) -> Image.Image:
    """An upright RGB picture, or a 400 saying why not (empty, unreadable, or over `pixel_limit` pixels)."""
    if not data:
        raise HTTPException(400, "empty upload: send an image file (JPEG, PNG, WebP, ...)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":  # decode at 1/2..1/8 scale when that still covers twice the model's side
                image.draft("RGB", (2 * image_size, 2 * image_size))
            width, height = image.size
            if width * height > pixel_limit:
                raise HTTPException(400, f"image is {width}x{height} = {width * height:,} pixels, over this "
                                         f"server's {pixel_limit:,}-pixel limit (cliptune serve --max-pixels); "
                                         f"downscale it")
            image.load()
            return to_rgb(_upright(image))
    except HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files; all mean "not an image"
        raise HTTPException(400, f"upload is not an image this server can read ({type(err).__name__})") from None


def decode_upload(upload: UploadFile, pixel_limit: int, image_size: int) -> Image.Image:
    return decode_bytes(upload.file.read(), pixel_limit, image_size)


__all__ = ["decode_bytes", "decode_upload", "default_pixel_limit"]
