"""Checkpoints between evaluations: every `train.save_every_steps` steps, and `checkpoints/epoch_N` at each epoch end
(`train.save_every_epoch`), whatever the evaluation cadence — a step that has no checkpoint yet gets one first."""

from __future__ import annotations

from cliptune.train import checkpoint as ckpt
from cliptune.train.callbacks.base import Callback


def ensure_checkpoint(ctx, state) -> None:
    """A `last` checkpoint at `state.step` (main process; the evaluation callback may have written it already)."""
    if ctx.dctx.is_main and ckpt.last_step(ctx.checkpoints) != state.step:
        state.save(ctx.checkpoints)


class PeriodicSave(Callback):
    def __init__(self, every_steps: int | None, every_epoch: bool):
        self.every_steps = every_steps
        self.every_epoch = every_epoch

    def on_step_end(self, ctx, state, out) -> None:
        if self.every_steps and state.step % self.every_steps == 0:
            ensure_checkpoint(ctx, state)
        if self.every_epoch and state.epoch_done:
            ensure_checkpoint(ctx, state)
            if ctx.dctx.is_main:
                ckpt.save_epoch_link(ctx.checkpoints, state.epoch + 1, state.step)
