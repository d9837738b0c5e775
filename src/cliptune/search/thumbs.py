"""Small previews of result images, for pictures, pages and the server: decoded like any input image (upright RGB),
shrunk with the aspect ratio kept; an unreadable file becomes a grey placeholder rather than a failed page."""

from __future__ import annotations

import base64
import io
import os

from PIL import Image

from cliptune.data.images import load_image
from cliptune.errors import DataError

PLACEHOLDER = (200, 200, 200)


def thumbnail(path: str | os.PathLike, size: int, upscale: bool = False) -> Image.Image:
    """At most size x size (exactly fitting it with `upscale`, for small icons in a grid); a grey square when the
    file is gone or unreadable."""
    try:
        image = load_image(path)
    except DataError:
        return Image.new("RGB", (size, size), PLACEHOLDER)
    if upscale and max(image.size) < size:
        ratio = size / max(image.size)
        return image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                            Image.Resampling.LANCZOS)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def encode(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"quality": 88} if format == "JPEG" else {}))
    return buffer.getvalue()


def data_uri(image: Image.Image) -> str:
    """A `data:` URI, so a page carries its pictures inside itself."""
    return "data:image/jpeg;base64," + base64.b64encode(encode(image, "JPEG")).decode("ascii")


__all__ = ["data_uri", "encode", "thumbnail"]
