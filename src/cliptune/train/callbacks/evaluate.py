"""Evaluate on the validation split at the configured cadence, decide `best` and early stopping, and checkpoint.

Rank 0 evaluates and writes the checkpoint; every rank learns whether to stop. Without a validation split every
checkpoint is also `best`.
"""

from __future__ import annotations

from cliptune.models.freeze import set_train_mode
from cliptune.train.callbacks.base import Callback, Evaluation
from cliptune.train.early_stop import metric_value


def flat(metrics: dict) -> dict:
    """`t2i/R@1`-style keys of the numeric metrics, for history.jsonl."""
    out = {}
    for direction in ("t2i", "i2t", "match"):
        for key, value in metrics.get(direction, {}).items():
            if isinstance(value, (int, float)) or value is None:
                out[f"{direction}/{key}"] = value
    return out


def evaluation_due(ctx, state) -> bool:
    every = ctx.cfg.train.eval_every
    return bool(every and state.step % every == 0) or (not every and state.epoch_done)


def _evaluate_and_save(ctx, state, epoch: int, in_epoch: int) -> None:
    tc, links = ctx.cfg.train, ("last", "best")
    if ctx.val:
        metrics = ctx.evaluate(ctx.model, ctx.val, **ctx.eval_kw)
        score = metric_value(metrics, tc.early_stop_metric)
        ctx.history.log({"step": state.step, "event": "eval", "split": ctx.cfg.data.val_split, **flat(metrics),
                         tc.early_stop_metric: score})
        is_best = state.stopper.update(score, state.step)
        links = ("last", "best") if is_best else ("last",)
        set_train_mode(ctx.model, ctx.plan, True)
        if ctx.callbacks is not None:
            ctx.callbacks.on_evaluate(ctx, state, Evaluation(state.step, metrics, score, is_best))
    state.save(ctx.checkpoints, links=links, epoch=epoch, in_epoch=in_epoch)


def evaluate_and_checkpoint(ctx, state, epoch: int | None = None, in_epoch: int | None = None) -> bool:
    """Evaluate (rank 0), checkpoint at `state`'s position, and return whether early stopping fired (all ranks)."""
    if epoch is None:
        epoch, in_epoch = state.position()
    if ctx.dctx.is_main:
        _evaluate_and_save(ctx, state, epoch, in_epoch)
    ctx.dctx.barrier()
    return bool(ctx.dctx.broadcast_object(state.stopper.should_stop if ctx.dctx.is_main else False))


class EvaluateAndCheckpoint(Callback):
    """At every `train.eval_every` steps (or epoch end); after the loop, once more unless the last step was saved."""

    def on_step_end(self, ctx, state, out) -> None:
        if evaluation_due(ctx, state) and evaluate_and_checkpoint(ctx, state):
            state.stopped_early = state.should_stop = True
