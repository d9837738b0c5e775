"""The pooled (k = 0) features of a split that a head-only fit needs, from the cheapest place that has them.

A tower's k = 0 features (`prefix(x, 0)`: the whole trunk and pooling, no head) are what the probe trains on. Where
the run cached the tower at a cut k > 0 (its last k blocks trained), those cached maps plus the tower's frozen last k
blocks give the same features (`Tower.pool_prefix`) without a second pass over the images; otherwise they come from
a k = 0 feature cache, which shares the run's on-disk cache (a tower the run froze whole is a cache hit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cliptune.config import Config
from cliptune.data.datasets import CaptionIndex
from cliptune.data.records import Record
from cliptune.models.base import DualEncoder, Features, Tower
from cliptune.models.freeze import SIDES, FreezePlan, plan_from_config
from cliptune.train.feature_cache import FeatureCache, default_cache_dir


@dataclass
class SplitFeatures:
    """k = 0 features of one split: per image, per caption, and which image each caption describes."""

    image: Features
    text: Features
    captions: CaptionIndex

    @property
    def n_images(self) -> int:
        return next(iter(self.image.values())).shape[0]


def whole_tower_plan(model: DualEncoder) -> FreezePlan:
    """Both towers frozen whole: the cache then holds exactly `prefix(x, 0)`."""
    n_blocks = {side: model.tower(side).n_blocks for side in SIDES}
    return FreezePlan(k={side: 0 for side in SIDES}, n_blocks=n_blocks)


def has_pool_prefix(tower: Tower) -> bool:
    return type(tower).pool_prefix is not Tower.pool_prefix


@torch.inference_mode()
def pool_batched(tower: Tower, features: Features, k: int, batch_size: int = 64) -> Features:
    """`tower.pool_prefix` over cached cut-point features, in batches (memory stays flat), on the tower's device."""
    from cliptune.inference.embed import feature_batches

    chunks = []
    for batch in feature_batches(tower, features, batch_size):
        chunks.append({key: v.float().cpu() for key, v in tower.pool_prefix(batch, k).items()})
    return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


class ProbeFeatures:
    """k = 0 features of any split of the run, for `model` (the towers as loaded, in eval mode)."""

    def __init__(self, model: DualEncoder, cfg: Config, progress: bool = False):
        tc = cfg.train
        cache_dir = default_cache_dir() if tc.feature_cache else None  # no disk writes when the run opted out
        common = dict(progress=progress, num_workers=cfg.data.num_workers, batch_size=cfg.eval.batch_size)
        self.model = model
        self.run_plan = plan_from_config(model, cfg.model)
        self.whole = FeatureCache(model, whole_tower_plan(model), cache_dir, **common)
        self.at_cut = FeatureCache(model, self.run_plan, cache_dir, **common) if tc.feature_cache else None
        self.source = {side: self._source(side) for side in SIDES}

    def _source(self, side: str) -> str:
        """How this side's features are obtained, as written into the probe block."""
        k = self.run_plan.k[side]
        if self.at_cut is not None and 0 < k and self.run_plan.frozen_prefix(side) \
                and has_pool_prefix(self.model.tower(side)):
            return f"run cache at k={k}, pooled through the frozen last {k} blocks"
        return "k=0 cache" if self.at_cut is not None else "k=0 pass (feature cache off)"

    def _side(self, side: str, inputs) -> Features:
        fetch = (lambda cache: cache.images(inputs)) if side == "image" else (lambda cache: cache.texts(inputs))
        if self.source[side].startswith("run cache"):
            return pool_batched(self.model.tower(side), fetch(self.at_cut), self.run_plan.k[side])
        return fetch(self.whole)

    def split(self, records: list[Record]) -> SplitFeatures:
        captions = CaptionIndex.from_records(records)
        return SplitFeatures(self._side("image", records), self._side("text", captions.texts), captions)
