"""Setting a run up, in the order reproducibility needs (each stage may draw from the seeded RNG): distributed
context → seed → splits → freeze plan and feature cache → objective (may add parameters) → batches → optimiser.

The trainer knows the DualEncoder and objective contracts and nothing about any backend. Per tower it either reads
cached features at the freeze boundary (frozen prefix, no augmentation) or runs the tower live. Its batches come from
`train/batches.py`: an indexed training split, or WebDataset shards streamed without an index.
"""

from __future__ import annotations

import random
import sys

import torch

from cliptune.config import Config
from cliptune.data.augment import ImageAugment, TextAugment
from cliptune.data.datasets import CaptionIndex, ImageFiles
from cliptune.data.decode_cache import DecodeCache, default_decode_cache_dir
from cliptune.data.records import Dataset, Record
from cliptune.errors import UsageError
from cliptune.inference.evaluate import Scored, evaluate_records, score_records
from cliptune.inference.match import evaluate_match
from cliptune.models.freeze import apply_freeze, plan_from_config
from cliptune.objectives import build_objective
from cliptune.objectives.batch import capabilities_of
from cliptune.objectives.hooks import attach_objective
from cliptune.train.batches import IndexedBatches, StreamedBatches, check_streamable
from cliptune.train.callbacks.progress import is_terminal
from cliptune.train.context import TrainContext
from cliptune.train.distributed import init_distributed
from cliptune.train.early_stop import EarlyStopping
from cliptune.train.feature_cache import FeatureCache, default_cache_dir
from cliptune.train.history import History
from cliptune.train.match import match_pairs
from cliptune.train.optim import build_optimizer
from cliptune.train.precision import resolve_device, resolve_precision
from cliptune.train.rundir import RunDir
from cliptune.train.schedule import build_scheduler
from cliptune.train.state import TrainState


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def split_records(cfg: Config, data: Dataset) -> tuple[list[Record] | None, list[Record], list[Record]]:
    """Train, val and test records; train is None when it is streamed from shards (never indexed)."""
    d = cfg.data
    val, test = data.split(d.val_split), data.split(d.test_split)
    if d.streaming:
        return None, val, test
    train = data.split(d.train_split)
    if not train:
        raise UsageError(f"{data.source}: split {d.train_split!r} is empty; splits found: {data.splits}")
    if d.max_train_images:
        train = train[: d.max_train_images]
    return train, val, test


def _inputs(ctx: TrainContext) -> None:
    """Cached prefix features for each frozen, unaugmented side (None = that side runs live every step)."""
    augment, cache, dctx = ctx.cfg.augment, ctx.cache, ctx.dctx
    if ctx.train is None:  # streamed: no index to cache by, so both towers run live (the cache still serves eval)
        return
    if dctx.enabled and not dctx.is_main:
        dctx.barrier()  # rank 0 fills the on-disk feature cache first; the others then read it
    ctx.captions = CaptionIndex.from_records(ctx.train)

    def cached(side: str) -> bool:
        return cache is not None and cache.covers(side) and not augment.enabled_for(side)

    ctx.image_feats = cache.images(ctx.train) if cached("image") else None
    ctx.text_feats = cache.texts(ctx.captions.texts) if cached("text") else None
    if dctx.enabled and dctx.is_main:
        dctx.barrier()


def _image_augment(ctx: TrainContext) -> ImageAugment | None:
    return ImageAugment.from_cfg(ctx.cfg.augment, size=ctx.model.image_size) \
        if ctx.cfg.augment.enabled_for("image") else None


def _indexed_batches(ctx: TrainContext) -> IndexedBatches:
    d, tc, train = ctx.cfg.data, ctx.cfg.train, ctx.train
    loader = DecodeCache(default_decode_cache_dir(), size=ctx.model.image_size) if d.decode_cache else None
    augment, transform = _image_augment(ctx), ctx.model.image_transform(train=False)

    def image_dataset(epoch: int, shown: list[str]) -> ImageFiles:
        """Decoded (optionally augmented) training images; `shown` is each image's caption this epoch."""
        return ImageFiles(train, transform, loader=loader, augment=augment, captions=shown, seed=tc.seed, epoch=epoch)

    return IndexedBatches(train, ctx.captions, batch_size=tc.batch_size, accum_steps=tc.accum_steps, seed=tc.seed,
                          no_duplicates=d.no_duplicate_batches,
                          image_dataset=image_dataset if ctx.image_feats is None else None,
                          num_workers=d.num_workers, pin_memory=ctx.device.type == "cuda", dctx=ctx.dctx)


def _streamed_batches(ctx: TrainContext) -> StreamedBatches:
    from cliptune.data.streaming import WebDatasetStream

    d, tc, dctx = ctx.cfg.data, ctx.cfg.train, ctx.dctx
    check_streamable(task=tc.task, mines=ctx.capabilities.mined_negatives, max_train_images=d.max_train_images,
                     resampled=d.resampled, epoch_length=d.epoch_length, max_steps=tc.max_steps,
                     batch_size=tc.batch_size, world_size=dctx.world_size)
    stream = WebDatasetStream(
        d.path, batch_size=tc.batch_size // dctx.world_size, transform=ctx.model.image_transform(train=False),
        image_augment=_image_augment(ctx), text_augment=ctx.text_augment, image_key=d.wds_image_key,
        caption_key=d.wds_caption_key, shuffle_buffer=d.shuffle_buffer, resampled=d.resampled,
        epoch_length=d.epoch_length, num_workers=d.num_workers, seed=tc.seed, on_bad_sample=d.on_bad_sample,
        no_duplicates=d.no_duplicate_batches, rank=dctx.rank, world_size=dctx.world_size)
    return StreamedBatches(stream, accum_steps=tc.accum_steps, num_workers=d.num_workers,
                           pin_memory=ctx.device.type == "cuda", dctx=dctx)


def _evaluate_retrieval(model, records, **kw):
    return evaluate_records(model, records, **kw)


def _evaluate_match(model, records, cache=None, progress=True, batch_size=64, num_workers=0, chunk_size=None):
    return {"match": evaluate_match(model, model.match_head, records, progress=progress, batch_size=batch_size,
                                    num_workers=num_workers)}


def _score_match(model, records, **kw) -> Scored:
    return Scored(_evaluate_match(model, records, **kw))


def build_context(cfg: Config, model, data: Dataset, run: RunDir, progress: bool = True,
                  console=None) -> TrainContext:
    """Everything fixed for the run, built in a fixed order (see the module docstring)."""
    tc = cfg.train
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    dctx = init_distributed(device.type)
    if dctx.enabled:
        if device.type == "cuda":
            device = torch.device("cuda", dctx.local_rank)
        progress = progress and dctx.is_main
        if tc.gradcache_mini_batch:
            raise UsageError("train.gradcache_mini_batch is not supported with several processes yet")
    seed_everything(tc.seed)
    train, val, test = split_records(cfg, data)
    model = model.to(device)
    plan = plan_from_config(model, cfg.model)
    apply_freeze(model, plan)
    ctx = TrainContext(cfg, run, model, device, precision, dctx, plan, train, val, test, objective=None,
                       capabilities=None, history=History(run.path, enabled=dctx.is_main), progress=progress,
                       console=console, bars=progress and is_terminal(sys.stderr))
    if tc.feature_cache and (plan.frozen_prefix("image") or plan.frozen_prefix("text")):
        ctx.cache = FeatureCache(model, plan, default_cache_dir(), progress=ctx.bars,
                                 num_workers=cfg.data.num_workers, batch_size=cfg.eval.batch_size)
    _inputs(ctx)
    ctx.objective = build_objective(cfg.loss.type, **cfg.loss.params).to(device)
    ctx.capabilities = capabilities_of(ctx.objective)
    attach_objective(ctx.objective, model)  # may add or re-initialise parameters (SigLIP's bias, the match head)
    model.to(device)
    ctx.text_augment = TextAugment.from_cfg(cfg.augment) if cfg.augment.enabled_for("text") else None
    ctx.source = _streamed_batches(ctx) if train is None else _indexed_batches(ctx)
    ctx.pairs = match_pairs(train) if tc.task == "match" else None
    ctx.evaluate = _evaluate_match if ctx.pairs is not None else _evaluate_retrieval
    ctx.score = _score_match if ctx.pairs is not None else score_records
    ctx.eval_kw = dict(cache=ctx.cache, progress=ctx.bars, batch_size=cfg.eval.batch_size,
                       num_workers=cfg.data.num_workers, chunk_size=cfg.eval.chunk_size)
    return ctx


def build_state(ctx: TrainContext) -> TrainState:
    """Optimiser, schedule and scaler over the model's trainable parameters; position 0."""
    tc, model = ctx.cfg.train, ctx.model
    total_steps = tc.max_steps or ctx.source.steps_per_epoch * tc.epochs  # None per epoch: the stream says
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.head_lr, tc.layer_decay)
    scheduler = build_scheduler(optimizer, tc.warmup_steps, total_steps, tc.min_lr_ratio)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.precision == "fp16")
    limit = min(total_steps, tc.stop_at_step) if tc.stop_at_step is not None else total_steps
    return TrainState(model, optimizer, scheduler, scaler, EarlyStopping(tc.early_stop_patience,
                      tc.early_stop_metric), total_steps=total_steps, limit=limit)
