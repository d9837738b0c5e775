"""After the loop: leave a resumable state when stopped on purpose, else final checkpoint, best weights, the test
evaluation, history.csv and the export (plus the match task's threshold). Rank 0 alone evaluates and exports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cliptune.models.lora import export_model
from cliptune.train import checkpoint as ckpt
from cliptune.train.callbacks.evaluate import evaluate_and_checkpoint, flat
from cliptune.train.context import TrainContext
from cliptune.train.match import detached_match_head, finish_match
from cliptune.train.state import TrainState


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    before: dict | None
    after: dict | None
    best_step: int | None
    stopped_early: bool
    wall_s: float  # this process's time in `fit` (not the run's, after a resume)
    extra: dict = field(default_factory=dict)
    resumed_from: int | None = None  # the step this process started at, when it resumed
    test_ranks: dict = field(default_factory=dict)  # "before"/"after" → per-query test ranks, when evaluated here
    probe: dict | None = None  # the probe's test metrics (train/probe.py), when it ran, shaped as before/after
    probe_info: dict | None = None  # its settings, selection and wall time (ProbeResult.block)
    gains: dict | None = None  # paired bootstrap intervals of the gains (train/gains.py)


def _stopped_resumably(ctx: TrainContext, state: TrainState, t_start: float) -> TrainResult:
    """`train.stop_at_step` (as if interrupted): a checkpoint at the position reached, nothing evaluated."""
    if ctx.dctx.is_main:
        state.save(ctx.checkpoints, epoch=state.epoch, in_epoch=state.in_epoch)
        ctx.history.write_csv()
    ctx.dctx.barrier()
    return TrainResult(ctx.run.path, state.step, state.before, None, state.stopper.best_step, False,
                       time.time() - t_start, resumed_from=state.resumed_from)


def finish(ctx: TrainContext, state: TrainState, t_start: float) -> TrainResult:
    if state.step < state.total_steps and not state.stopped_early:
        return _stopped_resumably(ctx, state, t_start)
    if ckpt.last_step(ctx.checkpoints) != state.step:
        evaluate_and_checkpoint(ctx, state, state.epoch, state.in_epoch)
    if not ctx.dctx.is_main:
        return TrainResult(ctx.run.path, state.step, None, None, None, state.stopped_early,
                           time.time() - t_start, extra={"rank": ctx.dctx.rank}, resumed_from=state.resumed_from)
    return _export(ctx, state, t_start)


def _export(ctx: TrainContext, state: TrainState, t_start: float) -> TrainResult:
    model, cfg, history = ctx.model, ctx.cfg, ctx.history
    best = ctx.checkpoints / "best"
    if best.exists():
        ckpt.load_checkpoint(best, model, restore_rng=False)
    scored = ctx.score(model, ctx.test, **ctx.eval_kw) if ctx.test else None
    after = scored.metrics if scored is not None else None
    if scored is not None:
        state.test_ranks["after"] = scored.ranks
    if after is not None:
        history.log({"step": state.step, "event": "eval", "split": cfg.eval.split, "phase": "after", **flat(after)})
    skipped = ctx.source.skipped_count
    if skipped:
        history.log({"step": state.step, "event": "skipped_samples", "count": skipped})
    history.write_csv()
    with detached_match_head(model):  # the head is saved on its own (match.json), not inside the model file
        export_model(model, ctx.run.model_dir)  # LoRA adapters, if any, are merged into the weights
    if ctx.pairs is not None:
        done = finish_match(model, model.match_head, ctx.val or ctx.train, ctx.test, ctx.run.model_dir,
                            metric=cfg.train.match_threshold_metric, progress=ctx.bars,
                            batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
        after = {"match": done["test"]} if done["test"] is not None else None
    return TrainResult(ctx.run.path, state.step, state.before, after, state.stopper.best_step,
                       state.stopper.should_stop, time.time() - t_start,
                       extra={"skipped_samples": skipped, "skipped": ctx.source.skipped_samples()},
                       resumed_from=state.resumed_from,
                       test_ranks={k: v for k, v in state.test_ranks.items() if v is not None})
