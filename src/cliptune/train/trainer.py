"""The training loop, in numbered stages (as HF's run_clip.py): config → data → model → inputs → optimiser →
baseline → loop → final evaluation → export.

The trainer knows the DualEncoder and objective contracts and nothing about any backend. Per tower it either
reads cached features at the freeze boundary (frozen prefix, no augmentation) or runs the tower live.

Reproducibility: batch order and caption choice derive from (seed, epoch) alone, evaluation runs under a forked
RNG, and checkpoints carry optimizer, scheduler and RNG state, so a run stopped at step N and resumed ends with the
same weights as an uninterrupted one.
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
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cliptune.config import Config
from cliptune.data.augment import ImageAugment, TextAugment
from cliptune.data.datasets import CaptionIndex, ImageFiles
from cliptune.data.decode_cache import DecodeCache, default_decode_cache_dir
from cliptune.data.sampling import epoch_caption_keys, no_duplicate_batches
from cliptune.data.seeds import sample_generator
from cliptune.data.records import Dataset, Record
from cliptune.errors import CliptuneError, UsageError
from cliptune.eval.retrieval import mean_recall
from cliptune.inference.evaluate import embed_split, evaluate_records
from cliptune.inference.match import evaluate_match
from cliptune.models.base import DualEncoder, Features
from cliptune.models.freeze import FreezePlan, apply_freeze, plan_from_config, set_train_mode
from cliptune.models.lora import export_model
from cliptune.objectives import build_objective
from cliptune.train import checkpoint as ckpt
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


def epoch_batches(n_images: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled image indices for one epoch, in full batches (a contrastive batch's size sets its negatives)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_images, generator=gen)
    n_full = n_images // batch_size
    if n_full == 0:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


def epoch_caption_draws(n_images: int, seed: int, epoch: int) -> torch.Tensor:
    """Which caption each image shows this epoch (one draw per image per epoch; evaluation uses all of them)."""
    gen = torch.Generator().manual_seed(seed * 7_919 + epoch + 1)
    return torch.randint(0, 1 << 30, (n_images,), generator=gen)


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
    def _splits(self) -> tuple[list[Record], list[Record], list[Record]]:
        d = self.cfg.data
        train, val, test = (self.data.split(d.train_split), self.data.split(d.val_split), self.data.split(d.test_split))
        if not train:
            raise UsageError(f"{self.data.source}: split {d.train_split!r} is empty; splits found: {self.data.splits}")
        if d.streaming:
            raise UsageError("data.streaming: the trainer reads shards map-style (members are read in place, nothing "
                             "is unpacked); set data.streaming=false. The streaming reader is data/streaming.py")
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

    def _image_batches(self, train: list[Record], batches: list[torch.Tensor], epoch: int, shown: list[str]):
        """Decoded (optionally augmented) training images for the given batches, in order, via a DataLoader."""
        d = self.cfg.data
        augment = ImageAugment.from_cfg(self.cfg.augment, size=self.model.image_size) \
            if self.cfg.augment.enabled_for("image") else None
        loader = DecodeCache(default_decode_cache_dir(), size=self.model.image_size) if d.decode_cache else None
        dataset = ImageFiles(train, self.model.image_transform(train=False), loader=loader, augment=augment,
                             captions=shown, seed=self.cfg.train.seed, epoch=epoch)
        return iter(DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=d.num_workers,
                               pin_memory=self.device.type == "cuda"))

    def _epoch_plan(self, train: list[Record], captions: CaptionIndex, batch_size: int, epoch: int):
        """This epoch's batches of image indices and the caption index each image shows."""
        seed = self.cfg.train.seed
        draws = epoch_caption_draws(len(train), seed, epoch)
        shown = [captions.caption_for(i, int(draws[i])) for i in range(len(train))]
        if self.cfg.data.no_duplicate_batches:  # a repeated image or caption in a batch is a false negative
            image_keys = [r.image for r in train]
            batches = [torch.tensor(b) for b in no_duplicate_batches(
                image_keys, epoch_caption_keys(captions.texts, shown), batch_size, seed, epoch)]
        else:
            batches = epoch_batches(len(train), batch_size, seed, epoch)
        return batches, torch.tensor(shown)

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
        if dctx.enabled and not dctx.is_main:
            dctx.barrier()  # rank 0 fills the on-disk feature cache first; the others then read it
        captions, image_feats, text_feats = self._build_inputs(train, plan, cache, cfg.augment)
        if dctx.enabled and dctx.is_main:
            dctx.barrier()
        objective = build_objective(cfg.loss.type, **cfg.loss.params).to(self.device)
        if hasattr(objective, "attach"):  # an objective may add or re-initialise model parameters (SigLIP's bias)
            objective.attach(model)
            model.to(self.device)
        if tc.wise_ft and dctx.is_main:  # WiSE-FT's θ_base: the model as training starts, before any resume load
            from cliptune.train.wise import snapshot

            self.wise_base = snapshot(model)
        pairs = match_pairs(train) if tc.task == "match" else None
        evaluate_records = _evaluate_match if pairs is not None else _evaluate_retrieval
        mines = hasattr(objective, "needs_refresh") and getattr(objective, "num_negatives", 0) > 0
        mined, mined_epoch = None, None

        batch_size = min(tc.batch_size, len(train))
        steps_per_epoch = max(1, len(train) // batch_size) // tc.accum_steps or 1
        total_steps = tc.max_steps or steps_per_epoch * tc.epochs
        optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.head_lr, tc.layer_decay)
        scheduler = build_scheduler(optimizer, tc.warmup_steps, total_steps, tc.min_lr_ratio)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        history = History(self.run.path, enabled=dctx.is_main)
        stopper = EarlyStopping(tc.early_stop_patience, tc.early_stop_metric)
        eval_kw = dict(cache=cache, progress=self.progress, batch_size=cfg.eval.batch_size,
                       num_workers=cfg.data.num_workers, chunk_size=cfg.eval.chunk_size)

        # ---- baseline: the model as loaded, on the test split -------------------------------------------------
        step, epoch, before = 0, 0, None
        if resume and self.run.has_checkpoint():
            state = ckpt.load_checkpoint(self.run.checkpoints / "last", model, optimizer, scheduler)
            step, epoch, before = state["step"], state["epoch"], state.get("before")
            stopper.load_state(state.get("early_stop", {}))
            history.truncate_after(step)  # steps logged after the checkpoint are redone, so they are logged again
            self._say(f"resumed from {self.run.checkpoints / 'last'} at step {step}")
        elif cfg.eval.before and test and dctx.is_main:
            before = evaluate_records(model, test, **eval_kw)
            history.log({"step": 0, "event": "eval", "split": cfg.eval.split, "phase": "before", **_flat(before)})

        def state_dict(current_step: int, current_epoch: int) -> dict:
            return {"step": current_step, "epoch": current_epoch, "before": before,
                    "early_stop": stopper.state(), "total_steps": total_steps}

        def evaluate_and_checkpoint(current_step: int, current_epoch: int) -> bool:
            """Rank 0 evaluates and writes the checkpoint; every rank learns whether to stop early."""
            should_stop = _evaluate_and_checkpoint(current_step, current_epoch) if dctx.is_main else False
            dctx.barrier()
            return bool(dctx.broadcast_object(should_stop))

        def _evaluate_and_checkpoint(current_step: int, current_epoch: int) -> bool:
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
                                 state_dict(current_step, current_epoch), links=links)
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

        # ---- the loop: epoch and position follow from the step alone, so a resumed run continues exactly ----------
        set_train_mode(model, plan, True)
        limit = min(total_steps, tc.stop_at_step) if tc.stop_at_step is not None else total_steps
        bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        t_window, n_window = time.time(), 0
        stopped_early = False
        bad_in_row, skipped_steps = 0, 0
        while step < limit and not stopped_early:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            current_epoch["epoch"] = epoch
            batches, shown = self._epoch_plan(train, captions, batch_size, epoch)
            batches = batches[in_epoch * tc.accum_steps: steps_per_epoch * tc.accum_steps]
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
            live_images = (self._image_batches(train, [dctx.shard(b) for b in batches], epoch,
                                               [captions.texts[int(c)] for c in shown])
                           if image_feats is None else None)
            for first in range(0, len(batches), tc.accum_steps):
                optimizer.zero_grad(set_to_none=True)
                finite = True
                for index in batches[first:first + tc.accum_steps]:
                    cap_index = shown[index]
                    pixels = {"pixel_values": next(live_images)} if live_images is not None else None
                    batch = {"image_index": index, "caption_index": cap_index, "encode_text": encode_text,
                             "epoch": epoch}
                    if pairs is not None:
                        batch.update(match_batch(pairs, index))
                    if mined is not None:
                        batch["negatives"] = mined[index]
                    if tc.local_loss:
                        batch["local_rows"] = dctx.local_rows(len(index))
                    if tc.gradcache_mini_batch:
                        def encode_image_at(pos, index=index, pixels=pixels):
                            live = {"pixel_values": pixels["pixel_values"][pos]} if pixels is not None else None
                            with autocast_context(self.device, self.precision):
                                return self._encode_side("image", plan.k["image"], image_feats, index[pos], live).float()

                        def encode_text_at(pos, cap_index=cap_index):
                            with autocast_context(self.device, self.precision):
                                return encode_text(cap_index[pos])

                        with autocast_context(self.device, self.precision):  # the loss (and mined negatives) as usual
                            loss_value, extras = gradcache_step(
                                encode_image_at, encode_text_at, objective, len(index), tc.gradcache_mini_batch,
                                model.scale(), model.logit_bias, batch=batch,
                                scale_loss=lambda l: scaler.scale(l / tc.accum_steps), return_outputs=True)
                        out = {"loss": torch.tensor(loss_value), **extras}
                    else:
                        with autocast_context(self.device, self.precision):
                            # each rank encodes its slice; gathered with gradient, the loss sees the global batch
                            img = dctx.gather(self._encode_side("image", plan.k["image"], image_feats,
                                                                dctx.shard(index), pixels))
                            txt = dctx.gather(encode_text(dctx.shard(cap_index)))
                            out = objective(img.float(), txt.float(), model.scale(), model.logit_bias, batch=batch)
                        loss = out["loss"] / tc.accum_steps
                        if torch.isfinite(loss):
                            scaler.scale(loss).backward()
                    n_window += len(index)
                    finite = finite and math.isfinite(float(out["loss"].detach()))
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
                                                 state_dict(step, step // steps_per_epoch))
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
                bar.update(1)
                if step % tc.log_every == 0 or step == total_steps:
                    rate = n_window / max(1e-9, time.time() - t_window)
                    lr = optimizer.param_groups[0]["lr"]
                    loss_value = float(out["loss"].detach())
                    history.log({"step": step, "event": "train", "epoch": epoch, "loss": loss_value,
                                 "lr": lr, "logit_scale": float(model.scale().detach()), "samples_per_s": rate})
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
                    t_window, n_window = time.time(), 0
                epoch_done = step % steps_per_epoch == 0
                if (tc.eval_every and step % tc.eval_every == 0) or (not tc.eval_every and epoch_done):
                    stopped_early = evaluate_and_checkpoint(step, epoch + int(epoch_done))
                if epoch_done and tc.save_every_epoch and dctx.is_main:
                    ckpt.save_epoch_link(self.run.checkpoints, epoch + 1, step)
                if step >= limit or stopped_early:
                    break
        bar.close()
        epoch = step // steps_per_epoch
        if step < total_steps and not stopped_early:  # stopped on purpose (stop_at_step): leave a resumable state
            if dctx.is_main:
                ckpt.save_checkpoint(self.run.checkpoints, model, optimizer, scheduler, state_dict(step, epoch))
                history.write_csv()
            dctx.barrier()
            return TrainResult(self.run.path, step, before, None, stopper.best_step, False, time.time() - t_start)
        if ckpt.last_step(self.run.checkpoints) != step:
            evaluate_and_checkpoint(step, epoch)
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
        history.write_csv()
        with detached_match_head(model):  # the head is saved on its own (match.json), not inside the model file
            export_model(model, self.run.model_dir)  # LoRA adapters, if any, are merged into the weights
        if pairs is not None:
            done = finish_match(model, model.match_head, val or train, test, self.run.model_dir,
                                metric=tc.match_threshold_metric, progress=self.progress,
                                batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
            after = {"match": done["test"]} if done["test"] is not None else None
        return TrainResult(self.run.path, step, before, after, stopper.best_step, stopper.should_stop,
                           time.time() - t_start)

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
