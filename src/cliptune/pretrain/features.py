"""Pooled trunk features of a pre-training set, computed once through the shared feature cache.

With both trunks frozen (k = 0) a tower's prefix is its pooled feature (1280 floats per image for EfficientNet-Lite0,
384 per caption for MiniLM), so the heads can then be fitted in seconds. Records are split by image into a training
part and a held-out part that only measures the heads (never tuned on the emoji evaluation data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cliptune.data.records import Record
from cliptune.models.base import DualEncoder


@dataclass
class PairFeatures:
    """Image features, caption features and, for each caption, the row of its image."""

    image: torch.Tensor  # [N, Fi]
    text: torch.Tensor  # [M, Ft]
    text_to_image: torch.Tensor  # [M] int64
    captions: list[str]

    @property
    def n_images(self) -> int:
        return int(self.image.shape[0])


def load_records(paths: list[str], held_out: float, seed: int,
                 max_images: int | None = None) -> tuple[list[Record], list[Record]]:
    """(training, held-out) records of every data spec in `paths`, split by image with a fixed seed; each set
    gives at most `max_images` training images (a seeded sample, in data order), to bound the CPU cost."""
    import random

    from cliptune.data.load import load_dataset

    train: list[Record] = []
    held: list[Record] = []
    for path in paths:
        data = load_dataset(path, split_ratios={"train": 1.0 - held_out, "val": held_out}, seed=seed)
        part = data.split("train")
        if max_images is not None and len(part) > max_images:
            chosen = sorted(random.Random(seed).sample(range(len(part)), max_images))
            part = [part[i] for i in chosen]
        train += part
        held += data.split("val")
    return train, held


CHUNK = 256  # images per cache entry: an interrupted extraction keeps what it finished


def chunks(records: list[Record]) -> list[list[Record]]:
    return [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]


def feature_cache(model: DualEncoder, cache_dir: Path | None, progress: bool = True):
    """The shared feature cache with both trunks frozen: prefixes are the pooled features."""
    from cliptune.models.freeze import plan_freeze
    from cliptune.train.feature_cache import FeatureCache

    return FeatureCache(model, plan_freeze(model, "both"), cache_dir, progress=progress, batch_size=32)


def extract(model: DualEncoder, records: list[Record], cache_dir: Path | None, progress: bool = True,
            desc: str = "") -> PairFeatures:
    """Pooled features of `records` (every caption of every image) through the feature cache, in chunks."""
    cache = feature_cache(model, cache_dir, progress)
    parts = [cache.images(part, desc=f"image features {desc} {n + 1}/{len(chunks(records))}".strip())["pooled"]
             for n, part in enumerate(chunks(records))]
    image = torch.cat(parts)
    captions = [c for rec in records for c in rec.captions]
    text = cache.texts(captions, desc=f"text features {desc}".strip())["pooled"]
    index = torch.tensor([i for i, rec in enumerate(records) for _ in rec.captions], dtype=torch.long)
    return PairFeatures(image=image.float(), text=text.float(), text_to_image=index, captions=captions)
