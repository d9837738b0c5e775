"""What a training run is made of once it is set up: built once by `train/setup.py`, read by the step function and
the callbacks, never changed by them (what changes from step to step lives in `TrainState`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from cliptune.config import Config
from cliptune.data.augment import TextAugment
from cliptune.data.datasets import CaptionIndex
from cliptune.data.records import Record
from cliptune.models.base import DualEncoder, Features
from cliptune.models.freeze import FreezePlan
from cliptune.objectives.batch import Capabilities
from cliptune.train.distributed import DistContext
from cliptune.train.history import History
from cliptune.train.rundir import RunDir


@dataclass
class TrainContext:
    cfg: Config
    run: RunDir
    model: DualEncoder
    device: torch.device
    precision: str
    dctx: DistContext
    plan: FreezePlan
    train: list[Record] | None  # None: streamed from shards, never indexed
    val: list[Record]
    test: list[Record]
    objective: torch.nn.Module
    capabilities: Capabilities
    history: History
    cache: Any = None  # FeatureCache over the frozen prefixes, or None
    captions: CaptionIndex | None = None
    image_feats: Features | None = None  # cached image-prefix features (None: the image tower runs live)
    text_feats: Features | None = None
    source: Any = None  # IndexedBatches or StreamedBatches
    pairs: Any = None  # MatchPairs for `task: match`
    text_augment: TextAugment | None = None
    evaluate: Callable[..., dict] | None = None  # (model, records, **eval_kw) -> metrics
    score: Callable[..., Any] | None = None  # as `evaluate`, -> Scored (metrics + per-query ranks): the test split
    eval_kw: dict = field(default_factory=dict)
    progress: bool = True  # report progress (a bar on a terminal, plain lines elsewhere)
    bars: bool = True  # progress bars of evaluation, caching and mining: on a terminal only
    console: Any = None
    callbacks: Any = None  # the run's CallbackList (the evaluation callback tells the others what it measured)

    @property
    def checkpoints(self) -> Path:
        return self.run.checkpoints

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)
