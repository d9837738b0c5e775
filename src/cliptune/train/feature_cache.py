"""Cache a tower's output at its freeze boundary, so each training step runs only the trainable top of the tower.

When a tower's first blocks are frozen and its inputs are not augmented, `tower.prefix(x, k)` is the same every
epoch. Computing it once turns projection-only training of a few thousand pairs from minutes into seconds, and
training the top blocks into a fraction of the full cost.

Entries are stored on disk as safetensors, keyed by a hash of everything that determines them: the frozen weights
themselves, the cut point, the transform or tokenizer settings and the inputs (image path + size + mtime, or the
caption text). A changed model, transform or file yields a new key, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from cliptune.data.records import Record
from cliptune.data.tar_members import stat_key
from cliptune.inference.embed import prefix_images, prefix_texts
from cliptune.models.base import DualEncoder, Features
from cliptune.models.freeze import FreezePlan


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLIPTUNE_CACHE", Path.home() / ".cache" / "cliptune")) / "features"


def _frozen_weights_digest(model: DualEncoder, side: str, plan: FreezePlan) -> str:
    tower = model.tower(side)
    h = hashlib.sha1()
    modules = tower.stem_modules() + tower.trunk_blocks()[: plan.n_blocks[side] - plan.k[side]]
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _inputs_digest_images(records: list[Record]) -> str:
    h = hashlib.sha1()
    for rec in records:
        try:  # a shard member (`shard.tar#key.jpg`) is keyed by its shard's size and mtime
            h.update(f"{stat_key(rec.image)}\n".encode())
        except OSError:
            h.update(f"{rec.image}|missing\n".encode())
    return h.hexdigest()


def _inputs_digest_texts(texts: list[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


class FeatureCache:
    """Disk-backed prefix features for one model + freeze plan; `None` cache_dir keeps everything in memory."""

    def __init__(self, model: DualEncoder, plan: FreezePlan, cache_dir: Path | None = None, progress: bool = True,
                 num_workers: int = 0, batch_size: int = 16):
        self.model = model
        self.plan = plan
        self.cache_dir = cache_dir
        self.progress = progress
        self.num_workers = num_workers
        self.batch_size = batch_size
        self._weights_digest = {side: _frozen_weights_digest(model, side, plan) for side in ("image", "text")}

    def covers(self, side: str) -> bool:
        """Only a frozen prefix is worth caching; a fully trainable tower is run live."""
        return self.plan.frozen_prefix(side)

    def _key(self, side: str, inputs_digest: str) -> str:
        if side == "image":
            settings = repr(self.model.image_transform(train=False))
        else:
            settings = f"{self.model.context_length}|{type(self.model).__name__}"
        tower = self.model.tower(side)
        layout = f"{type(tower).__qualname__}/{getattr(tower, 'feature_version', 1)}"
        raw = f"{side}|{layout}|{self.plan.k[side]}|{self._weights_digest[side]}|{settings}|{inputs_digest}"
        return hashlib.sha1(raw.encode()).hexdigest()

    def _cached(self, key: str, compute) -> Features:
        if self.cache_dir is None:
            return compute()
        from safetensors.torch import load_file

        from cliptune.models.weights import save_safetensors_atomic

        path = self.cache_dir / f"{key}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))
            except Exception:  # a damaged cache entry is recomputed, never trusted
                path.unlink(missing_ok=True)
        feats = compute()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic({k: v.contiguous() for k, v in feats.items()}, path)
        return feats

    def holds(self, side: str, records: list[Record]) -> bool:
        """Whether the disk cache already has `side` of these records, as training and evaluation ask for it."""
        from cliptune.data.datasets import CaptionIndex

        if self.cache_dir is None:
            return False
        digest = _inputs_digest_images(records) if side == "image" else \
            _inputs_digest_texts(CaptionIndex.from_records(records).texts)
        return (self.cache_dir / f"{self._key(side, digest)}.safetensors").is_file()

    def images(self, records: list[Record], desc: str = "caching image features") -> Features:
        key = self._key("image", _inputs_digest_images(records))
        return self._cached(key, lambda: prefix_images(self.model, records, self.plan.k["image"],
                                                       batch_size=self.batch_size, num_workers=self.num_workers,
                                                       desc=desc,
                                                       progress=self.progress))

    def texts(self, texts: list[str], desc: str = "caching text features") -> Features:
        key = self._key("text", _inputs_digest_texts(texts))
        return self._cached(key, lambda: prefix_texts(self.model, texts, self.plan.k["text"], desc=desc,
                                                      progress=self.progress))


def select(features: Features, index: torch.Tensor) -> Features:
    return {key: v[index] for key, v in features.items()}
