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

from cliptune.data.builders.shapes import COLORS, SHAPES, draw_shape as draw_shape_on  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLIPTUNE_CACHE", str(tmp_path_factory.mktemp("cache")))


def draw_shape(path: Path, color: tuple[int, int, int], shape: str, size: int = 64, seed: int = 0,
               dark: bool = False) -> None:
    """A shape on a light (or dark) ground of a slightly random shade."""
    rng = random.Random(seed)
    background = tuple(rng.randint(0, 40) + (40 if dark else 200) for _ in range(3))
    draw_shape_on(path, color, shape, size=size, rng=rng, background=background)


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
