"""The training loop, in numbered stages (as HF's run_clip.py): config → data → model → inputs → optimiser →
baseline → loop → final evaluation → export.

The trainer knows the DualEncoder and objective contracts and nothing about any backend. Per tower it either
reads cached features at the freeze boundary (frozen prefix, no augmentation) or runs the tower live. Its batches
come from `train/batches.py`: an indexed training split, or WebDataset shards streamed without an index.

Reproducibility: batch order and caption choice derive from (seed, epoch) alone (for a stream, from the seeded
readers of each epoch), evaluation runs under a forked RNG, and checkpoints carry optimizer, scheduler and RNG
state, so a run stopped at step N and resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import re
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cliptune.config import Config
from cliptune.data.augment import ImageAugment, TextAugment
from cliptune.data.datasets import CaptionIndex, ImageFiles
from cliptune.data.decode_cache import DecodeCache, default_decode_cache_dir
from cliptune.data.seeds import sample_generator
from cliptune.data.records import Dataset, Record
from cliptune.errors import CliptuneError, DataError, UsageError
from cliptune.eval.retrieval import mean_recall
from cliptune.inference.evaluate import embed_split, evaluate_records
from cliptune.inference.match import evaluate_match
from cliptune.models.base import DualEncoder, Features
from cliptune.models.freeze import FreezePlan, apply_freeze, plan_from_config, set_train_mode
from cliptune.models.lora import export_model
from cliptune.objectives import build_objective
from cliptune.train import checkpoint as ckpt
from cliptune.train.batches import IndexedBatches, MicroBatch, StreamedBatches, check_streamable
from cliptune.train.distributed import init_distributed
from cliptune.train.early_stop import EarlyStopping
from cliptune.train.feature_cache import FeatureCache, default_cache_dir, select
from cliptune.train.gradcache import gradcache_step
from cliptune.train.history import History
from cliptune.train.match import detached_match_head, finish_match, match_batch, match_pairs
from cliptune.train.mining import last_refresh_epoch, log_mined, mine_for, mining_stats, mining_warning
from cliptune.train.optim import build_optimizer
from cliptune.train.precision import autocast_context, resolve_device, resolve_precision
from cliptune.train.rundir import RunDir
from cliptune.train.schedule import build_scheduler


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    before: dict | None
    after: dict | None
    best_step: int | None
    stopped_early: bool
    wall_s: float
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: Config, model: DualEncoder, data: Dataset, run: RunDir, progress: bool = True,
                 console=None):
        self.cfg = cfg
        self.model = model
        self.data = data
        self.run = run
        self.progress = progress
        self.console = console
        self.device = resolve_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.wise_base = None  # set by fit() when train.wise_ft asks for WiSE-FT

    # ---- 1. data ------------------------------------------------------------------------------------------------
    def _splits(self) -> tuple[list[Record] | None, list[Record], list[Record]]:
        """Train, val and test records; train is None when it is streamed from shards (never indexed)."""
        d = self.cfg.data
        val, test = self.data.split(d.val_split), self.data.split(d.test_split)
        if d.streaming:
            return None, val, test
        train = self.data.split(d.train_split)
        if not train:
            raise UsageError(f"{self.data.source}: split {d.train_split!r} is empty; splits found: {self.data.splits}")
        if d.max_train_images:
            train = train[: d.max_train_images]
        return train, val, test

    # ---- 2. inputs per tower ------------------------------------------------------------------------------------
    def _build_inputs(self, train: list[Record], plan: FreezePlan, cache: FeatureCache | None, augment):
        """Cached prefix features for each frozen, unaugmented side (None = that side runs live every step)."""
        captions = CaptionIndex.from_records(train)

        def cached(side: str) -> bool:
            return cache is not None and cache.covers(side) and not augment.enabled_for(side)

        image_feats = cache.images(train) if cached("image") else None
        text_feats = cache.texts(captions.texts) if cached("text") else None
        return captions, image_feats, text_feats

    def _image_augment(self) -> ImageAugment | None:
        return ImageAugment.from_cfg(self.cfg.augment, size=self.model.image_size) \
            if self.cfg.augment.enabled_for("image") else None

    def _indexed_batches(self, train: list[Record], captions: CaptionIndex, live_images: bool, dctx) -> IndexedBatches:
        d, tc = self.cfg.data, self.cfg.train
        loader = DecodeCache(default_decode_cache_dir(), size=self.model.image_size) if d.decode_cache else None
        augment, transform = self._image_augment(), self.model.image_transform(train=False)

        def image_dataset(epoch: int, shown: list[str]) -> ImageFiles:
            """Decoded (optionally augmented) training images; `shown` is each image's caption this epoch."""
            return ImageFiles(train, transform, loader=loader, augment=augment, captions=shown, seed=tc.seed,
                              epoch=epoch)

        return IndexedBatches(train, captions, batch_size=tc.batch_size, accum_steps=tc.accum_steps, seed=tc.seed,
                              no_duplicates=d.no_duplicate_batches, image_dataset=image_dataset if live_images else None,
                              num_workers=d.num_workers, pin_memory=self.device.type == "cuda", dctx=dctx)

    def _streamed_batches(self, dctx) -> StreamedBatches:
        from cliptune.data.streaming import WebDatasetStream

        d, tc = self.cfg.data, self.cfg.train
        text_augment = TextAugment.from_cfg(self.cfg.augment) if self.cfg.augment.enabled_for("text") else None
        stream = WebDatasetStream(
            d.path, batch_size=tc.batch_size // dctx.world_size, transform=self.model.image_transform(train=False),
            image_augment=self._image_augment(), text_augment=text_augment, image_key=d.wds_image_key,
            caption_key=d.wds_caption_key, shuffle_buffer=d.shuffle_buffer, resampled=d.resampled,
            epoch_length=d.epoch_length, num_workers=d.num_workers, seed=tc.seed, on_bad_sample=d.on_bad_sample,
            no_duplicates=d.no_duplicate_batches, rank=dctx.rank, world_size=dctx.world_size)
        return StreamedBatches(stream, accum_steps=tc.accum_steps, num_workers=d.num_workers,
                               pin_memory=self.device.type == "cuda", dctx=dctx)

    # ---- 3. one optimisation step ---------------------------------------------------------------------------------
    def _encode_side(self, side: str, k: int, cached: Features | None, index: torch.Tensor, live_inputs) -> torch.Tensor:
        tower = self.model.tower(side)
        if cached is not None:
            feats = {key: v.to(self.device, non_blocking=True) for key, v in select(cached, index).items()}
        else:
            feats = tower.prefix({key: v.to(self.device, non_blocking=True) for key, v in live_inputs.items()}, k)
        return torch.nn.functional.normalize(tower.suffix(feats, k), dim=-1)

    # ---- the whole run --------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        t_start = time.time()
        cfg, tc = self.cfg, self.cfg.train
        dctx = init_distributed(self.device.type)
        if dctx.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", dctx.local_rank)
            self.progress = self.progress and dctx.is_main
            if tc.gradcache_mini_batch:
                raise UsageError("train.gradcache_mini_batch is not supported with several processes yet")
        seed_everything(tc.seed)
        train, val, test = self._splits()
        model = self.model.to(self.device)
        plan = plan_from_config(model, cfg.model)
        apply_freeze(model, plan)
        cache = None
        if tc.feature_cache and (plan.frozen_prefix("image") or plan.frozen_prefix("text")):
            cache = FeatureCache(model, plan, default_cache_dir(), progress=self.progress,
                                 num_workers=cfg.data.num_workers, batch_size=cfg.eval.batch_size)
        if train is not None:
            if dctx.enabled and not dctx.is_main:
                dctx.barrier()  # rank 0 fills the on-disk feature cache first; the others then read it
            captions, image_feats, text_feats = self._build_inputs(train, plan, cache, cfg.augment)
            if dctx.enabled and dctx.is_main:
                dctx.barrier()
        else:  # streamed: no index to cache by, so both towers run live (the cache still serves evaluation)
            captions, image_feats, text_feats = None, None, None
        objective = build_objective(cfg.loss.type, **cfg.loss.params).to(self.device)
        if hasattr(objective, "attach"):  # an objective may add or re-initialise model parameters (SigLIP's bias)
            objective.attach(model)
            model.to(self.device)
        if tc.wise_ft and dctx.is_main:  # WiSE-FT's θ_base: the model as training starts, before any resume load
            from cliptune.train.wise import snapshot

            self.wise_base = snapshot(model)
        mines = hasattr(objective, "needs_refresh") and getattr(objective, "num_negatives", 0) > 0
        mined, mined_epoch = None, None
        if train is None:
            d = cfg.data
            check_streamable(task=tc.task, mines=mines, max_train_images=d.max_train_images, resampled=d.resampled,
                             epoch_length=d.epoch_length, max_steps=tc.max_steps, batch_size=tc.batch_size,
                             world_size=dctx.world_size)
            source = self._streamed_batches(dctx)
        else:
            source = self._indexed_batches(train, captions, image_feats is None, dctx)
        pairs = match_pairs(train) if tc.task == "match" else None
        evaluate_records = _evaluate_match if pairs is not None else _evaluate_retrieval

        steps_per_epoch = source.steps_per_epoch  # None: an epoch ends when the stream does
        total_steps = tc.max_steps or steps_per_epoch * tc.epochs
        optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.head_lr, tc.layer_decay)
        scheduler = build_scheduler(optimizer, tc.warmup_steps, total_steps, tc.min_lr_ratio)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        history = History(self.run.path, enabled=dctx.is_main)
        stopper = EarlyStopping(tc.early_stop_patience, tc.early_stop_metric)
        eval_kw = dict(cache=cache, progress=self.progress, batch_size=cfg.eval.batch_size,
                       num_workers=cfg.data.num_workers, chunk_size=cfg.eval.chunk_size)

        # ---- baseline: the model as loaded, on the test split -------------------------------------------------
        step, epoch, in_epoch, before = 0, 0, 0, None
        if resume and self.run.has_checkpoint():
            state = ckpt.load_checkpoint(self.run.checkpoints / "last", model, optimizer, scheduler, scaler=scaler)
            step, epoch, before = state["step"], state["epoch"], state.get("before")
            # optimiser steps into the epoch (checkpoints without it are from indexed runs: the step says)
            in_epoch = state["in_epoch"] if "in_epoch" in state else step - epoch * steps_per_epoch
            stopper.load_state(state.get("early_stop", {}))
            history.truncate_after(step)  # steps logged after the checkpoint are redone, so they are logged again
            self._say(f"resumed from {self.run.checkpoints / 'last'} at step {step}")
        elif cfg.eval.before and test and dctx.is_main:
            before = evaluate_records(model, test, **eval_kw)
            history.log({"step": 0, "event": "eval", "split": cfg.eval.split, "phase": "before", **_flat(before)})

        def state_dict(current_step: int, current_epoch: int, current_in_epoch: int) -> dict:
            return {"step": current_step, "epoch": current_epoch, "in_epoch": current_in_epoch, "before": before,
                    "early_stop": stopper.state(), "total_steps": total_steps}

        def evaluate_and_checkpoint(current_step: int, current_epoch: int, current_in_epoch: int) -> bool:
            """Rank 0 evaluates and writes the checkpoint; every rank learns whether to stop early."""
            should_stop = (_evaluate_and_checkpoint(current_step, current_epoch, current_in_epoch)
                           if dctx.is_main else False)
            dctx.barrier()
            return bool(dctx.broadcast_object(should_stop))

        def _evaluate_and_checkpoint(current_step: int, current_epoch: int, current_in_epoch: int) -> bool:
            links = ("last",)
            if val:
                metrics = evaluate_records(model, val, **eval_kw)
                score = _metric(metrics, tc.early_stop_metric)
                history.log({"step": current_step, "event": "eval", "split": cfg.data.val_split, **_flat(metrics),
                             tc.early_stop_metric: score})
                if stopper.update(score, current_step):
                    links = ("last", "best")
                set_train_mode(model, plan, True)
            else:
                links = ("last", "best")
            ckpt.save_checkpoint(self.run.checkpoints, model, optimizer, scheduler,
                                 state_dict(current_step, current_epoch, current_in_epoch), links=links, scaler=scaler)
            return stopper.should_stop

        text_augment = TextAugment.from_cfg(cfg.augment) if cfg.augment.enabled_for("text") else None
        current_epoch = {"epoch": 0}

        def caption_text(c: int) -> str:
            text = captions.texts[c]
            if text_augment is None:
                return text
            return text_augment(text, sample_generator(tc.seed, current_epoch["epoch"], ("text", c)))

        def encode_text(caption_index: torch.Tensor) -> torch.Tensor:
            """Normalised embeddings (with grad) of training captions by index; objectives may call it for extras."""
            tokens = None if text_feats is not None else model.tokenize([caption_text(int(c)) for c in caption_index])
            return self._encode_side("text", plan.k["text"], text_feats, caption_index, tokens).float()

        def encode_texts(mb: MicroBatch) -> torch.Tensor:
            """This rank's captions of a micro-batch: by index (indexed data) or as streamed text."""
            if mb.caption_index is not None:
                return encode_text(mb.caption_index)
            return self._encode_side("text", plan.k["text"], None, None, model.tokenize(mb.captions)).float()

        def encode_images(mb: MicroBatch) -> torch.Tensor:
            pixels = {"pixel_values": mb.pixels} if mb.pixels is not None else None
            return self._encode_side("image", plan.k["image"], image_feats, mb.image_index, pixels).float()

        # ---- the loop: the source replays an epoch from any position, so a resumed run continues exactly ----------
        set_train_mode(model, plan, True)
        limit = min(total_steps, tc.stop_at_step) if tc.stop_at_step is not None else total_steps
        bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        t_window, n_window = time.time(), 0
        stopped_early = False
        bad_in_row, skipped_steps = 0, 0
        while step < limit and not stopped_early:
            current_epoch["epoch"] = epoch
            if mines and mined_epoch != last_refresh_epoch(epoch, objective.refresh_epochs):
                mined_epoch = last_refresh_epoch(epoch, objective.refresh_epochs)
                image_all, text_all, _ = embed_split(model, train, cache=cache, progress=self.progress,
                                                     batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
                mined = mine_for(objective, image_all, text_all, captions.text_to_image, seed=tc.seed + mined_epoch)
                if objective.log_mined:
                    log_mined(self.run.path / "mined" / f"epoch_{mined_epoch}.jsonl", mined, captions.texts,
                              [r.image for r in train], captions.text_to_image)
                stats = mining_stats(mined)
                history.log({"step": step, "event": "mining", "epoch": mined_epoch, **stats})
                warning = mining_warning(stats, objective.false_negative_threshold)
                if warning:
                    self._say(f"[yellow]{warning}[/]")
                set_train_mode(model, plan, True)
            epoch_done, steps_before = False, step
            for group, epoch_done in source.epoch(epoch, in_epoch):
                optimizer.zero_grad(set_to_none=True)
                bad = torch.zeros((), dtype=torch.bool, device=self.device)  # read once per step, not per batch
                for mb in group:
                    batch = {"epoch": epoch}
                    if mb.image_index is not None:
                        batch.update(image_index=mb.image_index, caption_index=mb.caption_index,
                                     encode_text=encode_text)
                    if pairs is not None:
                        batch.update(match_batch(pairs, mb.image_index))
                    if mined is not None:
                        batch["negatives"] = mined[mb.image_index]
                    if tc.local_loss:
                        batch["local_rows"] = dctx.local_rows(mb.rows)
                    if tc.gradcache_mini_batch:
                        def encode_image_at(pos, mb=mb):
                            with autocast_context(self.device, self.precision):
                                return encode_images(mb.take(pos))

                        def encode_text_at(pos, mb=mb):
                            with autocast_context(self.device, self.precision):
                                return encode_texts(mb.take(pos))

                        with autocast_context(self.device, self.precision):  # the loss (and mined negatives) as usual
                            loss_value, extras = gradcache_step(
                                encode_image_at, encode_text_at, objective, mb.rows, tc.gradcache_mini_batch,
                                model.scale(), model.logit_bias, batch=batch,
                                scale_loss=lambda l: scaler.scale(l / tc.accum_steps), return_outputs=True)
                        out = {"loss": torch.tensor(loss_value), **extras}
                    else:
                        with autocast_context(self.device, self.precision):
                            # each rank encodes its rows; gathered with gradient, the loss sees the global batch
                            local = mb.local(dctx)
                            img = dctx.gather(encode_images(local))
                            txt = dctx.gather(encode_texts(local))
                            out = objective(img, txt, model.scale(), model.logit_bias, batch=batch)
                        # a non-finite loss still runs backward (its gradients are dropped below), so every rank
                        # makes the same collective calls and the device is not read here
                        scaler.scale(out["loss"] / tc.accum_steps).backward()
                    n_window += mb.rows
                    bad |= ~torch.isfinite(out["loss"].detach()).to(bad.device)
                finite = dctx.all_true(~bad)  # every rank steps, or every rank skips
                if finite:
                    dctx.average_gradients(p for p in model.parameters() if p.requires_grad)
                if finite and tc.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], tc.grad_clip)
                if finite:
                    scaler.step(optimizer)
                    scaler.update()
                    bad_in_row = 0
                else:  # skip the update, keep data order and schedule on track
                    optimizer.zero_grad(set_to_none=True)
                    bad_in_row += 1
                    skipped_steps += 1
                    history.log({"step": step + 1, "event": "skipped_step", "loss": str(float(out["loss"].detach())),
                                 "in_a_row": bad_in_row})
                    self._say(f"[yellow]warning:[/] non-finite loss at step {step + 1}; update skipped "
                              f"({bad_in_row} in a row, {skipped_steps} in total)")
                    if bad_in_row >= tc.max_bad_steps:
                        if dctx.is_main:
                            ckpt.save_checkpoint(self.run.checkpoints, model, optimizer, scheduler,
                                                 state_dict(step, epoch, in_epoch), scaler=scaler)
                        history.write_csv()
                        raise CliptuneError(
                            f"the loss was NaN/inf for {bad_in_row} steps in a row (step {step + 1}); stopped. "
                            f"The last good state is in {self.run.checkpoints / 'last'}. Lower train.lr, set "
                            f"train.grad_clip, or check the data")
                with warnings.catch_warnings():  # a skipped update still advances the schedule, on purpose
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(model.max_logit_scale))
                step += 1
                in_epoch += 1
                bar.update(1)
                if step % tc.log_every == 0 or step == total_steps:
                    rate = n_window / max(1e-9, time.time() - t_window)
                    lr = optimizer.param_groups[0]["lr"]
                    loss_value = float(out["loss"].detach())
                    history.log({"step": step, "event": "train", "epoch": epoch, "loss": loss_value,
                                 "lr": lr, "logit_scale": float(model.scale().detach()), "samples_per_s": rate})
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
                    t_window, n_window = time.time(), 0
                if epoch_done:  # the position a checkpoint records: the start of the next epoch
                    position = (epoch + 1, 0)
                else:
                    position = (epoch, in_epoch)
                if (tc.eval_every and step % tc.eval_every == 0) or (not tc.eval_every and epoch_done):
                    stopped_early = evaluate_and_checkpoint(step, *position)
                if epoch_done and tc.save_every_epoch and dctx.is_main:
                    ckpt.save_epoch_link(self.run.checkpoints, epoch + 1, step)
                if step >= limit or stopped_early:
                    break
            if step == steps_before:
                raise DataError(f"epoch {epoch} gave no full batch of {tc.batch_size} (× {tc.accum_steps} "
                                f"accumulation steps); the data is smaller than one step, or every sample was bad",
                                file=str(cfg.data.path))
            if epoch_done:
                epoch, in_epoch = epoch + 1, 0
        bar.close()
        if step < total_steps and not stopped_early:  # stopped on purpose (stop_at_step): leave a resumable state
            if dctx.is_main:
                ckpt.save_checkpoint(self.run.checkpoints, model, optimizer, scheduler,
                                     state_dict(step, epoch, in_epoch), scaler=scaler)
                history.write_csv()
            dctx.barrier()
            return TrainResult(self.run.path, step, before, None, stopper.best_step, False, time.time() - t_start)
        if ckpt.last_step(self.run.checkpoints) != step:
            evaluate_and_checkpoint(step, epoch, in_epoch)
        if not dctx.is_main:  # rank 0 alone evaluates, exports and reports
            return TrainResult(self.run.path, step, None, None, None, stopped_early, time.time() - t_start,
                               extra={"rank": dctx.rank})

        # ---- final: best weights, test split, export -------------------------------------------------------------
        best = self.run.checkpoints / "best"
        if best.exists():
            ckpt.load_checkpoint(best, model, restore_rng=False)
        after = evaluate_records(model, test, **eval_kw) if test else None
        if after is not None:
            history.log({"step": step, "event": "eval", "split": cfg.eval.split, "phase": "after", **_flat(after)})
        if source.skipped_count:
            history.log({"step": step, "event": "skipped_samples", "count": source.skipped_count})
        history.write_csv()
        with detached_match_head(model):  # the head is saved on its own (match.json), not inside the model file
            export_model(model, self.run.model_dir)  # LoRA adapters, if any, are merged into the weights
        if pairs is not None:
            done = finish_match(model, model.match_head, val or train, test, self.run.model_dir,
                                metric=tc.match_threshold_metric, progress=self.progress,
                                batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
            after = {"match": done["test"]} if done["test"] is not None else None
        return TrainResult(self.run.path, step, before, after, stopper.best_step, stopper.should_stop,
                           time.time() - t_start, extra={"skipped_samples": source.skipped_count,
                                                         "skipped": source.skipped_samples()})

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)


def _flat(metrics: dict) -> dict:
    out = {}
    for direction in ("t2i", "i2t", "match"):
        for key, value in metrics.get(direction, {}).items():
            if isinstance(value, (int, float)) or value is None:
                out[f"{direction}/{key}"] = value
    return out


def _evaluate_retrieval(model, records, **kw):
    return evaluate_records(model, records, **kw)


def _evaluate_match(model, records, cache=None, progress=True, batch_size=64, num_workers=0, chunk_size=None):
    return {"match": evaluate_match(model, model.match_head, records, progress=progress, batch_size=batch_size,
                                    num_workers=num_workers)}


def _metric(metrics: dict, name: str) -> float:
    """`mean_<metric>` (mean_R@10, mean_mAP) averages both directions; `t2i/R@1` style names pick one value."""
    if name.startswith("mean_R@"):
        return mean_recall(metrics, int(name.split("@")[1]))
    if name.startswith("mean_"):
        key = name[len("mean_"):]
        return (float(metrics["t2i"][key]) + float(metrics["i2t"][key])) / 2
    direction, key = name.split("/", 1)
    return float(metrics[direction][key])
