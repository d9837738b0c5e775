"""Shared fixtures: no network, a private feature cache, and small generated image–caption datasets."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

COLORS = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40),
    "purple": (140, 50, 170), "orange": (250, 140, 20), "black": (15, 15, 15), "white": (245, 245, 245),
}
SHAPES = ("square", "circle", "triangle", "cross")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLIPTUNE_CACHE", str(tmp_path_factory.mktemp("cache")))


def draw_shape(path: Path, color: tuple[int, int, int], shape: str, size: int = 64, seed: int = 0,
               dark: bool = False) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    bg = tuple(rng.randint(0, 40) + (40 if dark else 200) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    m = size // 6 + rng.randint(-2, 2)
    box = (m, m, size - m, size - m)
    if shape == "square":
        d.rectangle(box, fill=color)
    elif shape == "circle":
        d.ellipse(box, fill=color)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=color)
    else:
        w = size // 8
        d.rectangle((size // 2 - w, m, size // 2 + w, size - m), fill=color)
        d.rectangle((m, size // 2 - w, size - m, size // 2 + w), fill=color)
    img.save(path)


def make_shapes_csv(root: Path, n_per_combo: int = 2, size: int = 64) -> Path:
    """Colored shapes on light or dark ground, captions like 'a red circle on dark': a learnable retrieval task
    where every caption is unique (no false negatives)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    i = 0
    for cname, color in COLORS.items():
        for shape in SHAPES:
            for rep, ground in enumerate(("light", "dark")[:n_per_combo]):
                name = f"{cname}_{shape}_{ground}.png"
                draw_shape(root / name, color, shape, size=size, seed=i, dark=ground == "dark")
                rows.append({"image_path": name, "caption": f"a {cname} {shape} on {ground}"})
                i += 1
    path = root / "pairs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def shapes_csv(tmp_path) -> Path:
    return make_shapes_csv(tmp_path / "shapes")
