"""One optimisation step: encode each micro-batch (cached prefix features or the live tower), build its typed
`TrainBatch`, run the objective, backpropagate, then update — or skip the update when the loss was not finite on
some rank, keeping data order and schedule on track (the non-finite guard callback counts and reports it)."""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass

import torch

from cliptune.data.seeds import sample_generator
from cliptune.models.base import Features
from cliptune.objectives.batch import TrainBatch, embed_negatives
from cliptune.train.batches import MicroBatch
from cliptune.train.context import TrainContext
from cliptune.train.feature_cache import select
from cliptune.train.gradcache import gradcache_step
from cliptune.train.match import match_batch
from cliptune.train.precision import autocast_context
from cliptune.train.state import TrainState


@dataclass
class StepOutput:
    loss: torch.Tensor  # the last micro-batch's loss, detached
    outputs: dict  # the objective's other outputs for that micro-batch
    finite: bool  # False: the update was skipped
    rows: int  # pairs seen over all micro-batches and ranks


class Encoder:
    """L2-normalised embeddings with grad of the micro-batch rows, per tower from cached prefix features or live."""

    def __init__(self, ctx: TrainContext, epoch: int):
        self.ctx, self.epoch = ctx, epoch

    def side(self, side: str, cached: Features | None, index: torch.Tensor | None, live_inputs) -> torch.Tensor:
        ctx = self.ctx
        tower, k, device = ctx.model.tower(side), ctx.plan.k[side], ctx.device
        if cached is not None:
            feats = {key: v.to(device, non_blocking=True) for key, v in tower.trim(select(cached, index)).items()}
        else:
            feats = tower.prefix({key: v.to(device, non_blocking=True) for key, v in live_inputs.items()}, k)
        return torch.nn.functional.normalize(tower.suffix(feats, k), dim=-1).float()

    def caption_text(self, c: int) -> str:
        text = self.ctx.captions.texts[c]
        if self.ctx.text_augment is None:
            return text
        return self.ctx.text_augment(text, sample_generator(self.ctx.cfg.train.seed, self.epoch, ("text", c)))

    def text_by_index(self, caption_index: torch.Tensor) -> torch.Tensor:
        """Training captions by index (the micro-batch's, or mined negatives)."""
        feats = self.ctx.text_feats
        tokens = None if feats is not None else self.ctx.model.tokenize(
            [self.caption_text(int(c)) for c in caption_index])
        return self.side("text", feats, caption_index, tokens)

    def texts(self, mb: MicroBatch) -> torch.Tensor:
        """This rank's captions of a micro-batch: by index (indexed data) or as streamed text."""
        if mb.caption_index is not None:
            return self.text_by_index(mb.caption_index)
        return self.side("text", None, None, self.ctx.model.tokenize(mb.captions))

    def images(self, mb: MicroBatch) -> torch.Tensor:
        pixels = {"pixel_values": mb.pixels} if mb.pixels is not None else None
        return self.side("image", self.ctx.image_feats, mb.image_index, pixels)


def train_batch(ctx: TrainContext, mb: MicroBatch, epoch: int, mined: torch.Tensor | None) -> TrainBatch:
    """Everything the objective gets besides the embeddings (negative embeddings are added by the caller)."""
    batch = TrainBatch(epoch=epoch, image_index=mb.image_index, caption_index=mb.caption_index)
    if ctx.pairs is not None:
        found = match_batch(ctx.pairs, mb.image_index)
        batch.labels, batch.negative_mask = found["labels"], found["negative_mask"]
    if mined is not None:
        batch.negatives = mined[mb.image_index]
    if ctx.cfg.train.local_loss:
        batch.local_rows = ctx.dctx.local_rows(mb.rows)
    return batch


def _with_negatives(batch: TrainBatch, encoder: Encoder) -> TrainBatch:
    if batch.negatives is not None:
        batch.negative_emb = embed_negatives(batch.negatives, encoder.text_by_index)
    return batch


def _micro_step(ctx: TrainContext, state: TrainState, mb: MicroBatch, encoder: Encoder
                ) -> tuple[torch.Tensor, dict]:
    """Forward and backward of one micro-batch; returns the loss (with graph) and the other outputs."""
    model, tc, scaler = ctx.model, ctx.cfg.train, state.scaler
    batch = train_batch(ctx, mb, state.epoch, state.mined)
    if tc.gradcache_mini_batch:
        def at(encode, pos):
            with autocast_context(ctx.device, ctx.precision):
                return encode(mb.take(pos))

        with autocast_context(ctx.device, ctx.precision):  # the loss (and mined negatives) as usual
            loss_value, extras = gradcache_step(
                lambda pos: at(encoder.images, pos), lambda pos: at(encoder.texts, pos), ctx.objective, mb.rows,
                tc.gradcache_mini_batch, model.scale(), model.logit_bias,
                batch=lambda: _with_negatives(batch, encoder),
                scale_loss=lambda loss: scaler.scale(loss / tc.accum_steps), return_outputs=True)
        return torch.tensor(loss_value), extras
    with autocast_context(ctx.device, ctx.precision):
        # each rank encodes its rows; gathered with gradient, the loss sees the global batch
        local = mb.local(ctx.dctx)
        img = ctx.dctx.gather(encoder.images(local))
        txt = ctx.dctx.gather(encoder.texts(local))
        out = ctx.objective(img, txt, model.scale(), model.logit_bias, batch=_with_negatives(batch, encoder))
    # a non-finite loss still runs backward (its gradients are dropped below), so every rank makes the same
    # collective calls and the device is not read here
    scaler.scale(out["loss"] / tc.accum_steps).backward()
    return out["loss"], {k: v for k, v in out.items() if k != "loss"}


def _update(ctx: TrainContext, state: TrainState, finite: bool) -> None:
    """Apply the accumulated gradients (all ranks agree on `finite`); advance the schedule either way."""
    trainable = [p for p in ctx.model.parameters() if p.requires_grad]
    if finite:
        ctx.dctx.average_gradients(trainable)
        if ctx.cfg.train.grad_clip:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, ctx.cfg.train.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()  # a skipped update still advances the schedule, on purpose (see `run_warning_filters`)
    with torch.no_grad():
        ctx.model.logit_scale.clamp_(0, math.log(ctx.model.max_logit_scale))


@contextlib.contextmanager
def run_warning_filters():
    """For a whole run, silence two warnings the loop triggers on purpose: torch's "scheduler stepped before
    optimizer" (a skipped update still advances the schedule) and the deprecation of the autograd-aware
    `all_gather` (its successor is not public yet). Entered once per run, not per step: `warnings.catch_warnings`
    resets Python's warn-once registry on every entry, so a per-step block would repeat every warning every step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather is deprecated")
        yield


def train_step(ctx: TrainContext, state: TrainState, group: list[MicroBatch]) -> StepOutput:
    """One optimiser step over the micro-batches of `group` (gradient accumulation); does not move `state.step`."""
    state.optimizer.zero_grad(set_to_none=True)
    encoder = Encoder(ctx, state.epoch)
    bad = torch.zeros((), dtype=torch.bool, device=ctx.device)  # read once per step, not per micro-batch
    rows, loss, extras = 0, None, {}
    for mb in group:
        loss, extras = _micro_step(ctx, state, mb, encoder)
        rows += mb.rows
        bad |= ~torch.isfinite(loss.detach()).to(bad.device)
    finite = ctx.dctx.all_true(~bad)  # every rank steps, or every rank skips
    _update(ctx, state, finite)
    return StepOutput(loss.detach(), extras, finite, rows)
