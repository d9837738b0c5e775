"""Coloured shapes on a plain ground: a small synthetic image–caption task that needs no package data.

Each (colour, shape) pair is learnable from pixels alone, so a model that trains at all retrieves them; smoke runs,
tests and throughput benchmarks use it where the emoji set would be too big or too slow to build.
"""

from __future__ import annotations

import random
from pathlib import Path

COLORS = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40),
    "purple": (140, 50, 170), "orange": (250, 140, 20), "black": (15, 15, 15), "white": (245, 245, 245),
}
SHAPES = ("square", "circle", "triangle", "cross")


def draw_shape(path: str | Path, color: tuple[int, int, int], shape: str, *, size: int = 64,
               rng: random.Random | None = None, background: tuple[int, int, int] = (220, 220, 220), jitter: int = 2,
               **save_options) -> None:
    """Draw one `shape` in `color` on `background`; `rng` moves its margin by up to `jitter` pixels."""
    from PIL import Image, ImageDraw

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    m = size // 6 + rng.randint(-jitter, jitter)
    if shape == "square":
        draw.rectangle((m, m, size - m, size - m), fill=color)
    elif shape == "circle":
        draw.ellipse((m, m, size - m, size - m), fill=color)
    elif shape == "triangle":
        draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=color)
    else:
        w = size // 8
        draw.rectangle((size // 2 - w, m, size // 2 + w, size - m), fill=color)
        draw.rectangle((m, size // 2 - w, size - m, size // 2 + w), fill=color)
    image.save(path, **save_options)
