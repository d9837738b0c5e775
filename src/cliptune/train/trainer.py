"""The training loop, as open_clip's `train_one_epoch` with HF-style callbacks: set up (`train/setup.py`) → restore
or measure the baseline → steps (`train/step.py`) with callbacks for everything else → finish (`train/finish.py`).

Callbacks (`train/callbacks/`): non-finite guard, progress and history, evaluation + checkpoint + early stopping,
periodic saves, interruption (Ctrl-C / SIGTERM), hard-negative mining refresh, WiSE-FT's base snapshot; a caller
adds its own through `Trainer(callbacks=[...])` to observe or stop a run.

Reproducibility: batch order and caption choice derive from (seed, epoch) alone (for a stream, from the seeded
readers of each epoch), evaluation runs under a forked RNG, and checkpoints carry optimizer, scheduler and RNG
state, so a run stopped at step N and resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time

from cliptune.config import Config
from cliptune.data.records import Dataset
from cliptune.errors import DataError
from cliptune.models.base import DualEncoder
from cliptune.models.freeze import set_train_mode
from cliptune.train.callbacks.base import CallbackList
from cliptune.train.callbacks.evaluate import EvaluateAndCheckpoint, flat
from cliptune.train.callbacks.interrupt import Interruption
from cliptune.train.callbacks.mining import MiningRefresh
from cliptune.train.callbacks.nonfinite import NonFiniteGuard
from cliptune.train.callbacks.progress import TrainLog
from cliptune.train.callbacks.saving import PeriodicSave
from cliptune.train.callbacks.wise import WiseSnapshot
from cliptune.train.context import TrainContext
from cliptune.train.finish import TrainResult, finish
from cliptune.train.precision import resolve_device, resolve_precision
from cliptune.train.rundir import RunDir
from cliptune.train.setup import build_context, build_state, seed_everything  # noqa: F401  (re-exported)
from cliptune.train.state import TrainState
from cliptune.train.step import run_warning_filters, train_step

__all__ = ["Trainer", "TrainResult", "seed_everything"]


def default_callbacks(ctx: TrainContext) -> list:
    """The loop's own callbacks, in the order they run after each step."""
    tc = ctx.cfg.train
    callbacks = [MiningRefresh()] if ctx.capabilities.mined_negatives else []
    callbacks += [NonFiniteGuard(tc.max_bad_steps), TrainLog(enabled=ctx.progress), EvaluateAndCheckpoint(),
                  PeriodicSave(tc.save_every_steps, tc.save_every_epoch), Interruption()]
    if tc.wise_ft:
        callbacks.append(WiseSnapshot())
    return callbacks


def start(ctx: TrainContext, state: TrainState, resume: bool) -> None:
    """Continue from `checkpoints/last`, or measure the model as loaded on the test split (`before`)."""
    cfg = ctx.cfg
    if resume and ctx.run.has_checkpoint():
        state.restore(ctx.checkpoints / "last", ctx.source.steps_per_epoch)
        ctx.history.resume_after(state.step)  # steps logged after the checkpoint are redone, so logged again
        ctx.say(f"resumed from {ctx.checkpoints / 'last'} at step {state.step}")
        return
    if resume:  # a run that ended before its first checkpoint starts over
        ctx.history.resume_after(-1)
        ctx.say(f"no checkpoint in {ctx.checkpoints} yet: starting {ctx.run.path} from step 0")
    if cfg.eval.before and ctx.test and ctx.dctx.is_main:
        scored = ctx.score(ctx.model, ctx.test, **ctx.eval_kw)
        state.before, state.test_ranks["before"] = scored.metrics, scored.ranks
        ctx.history.log({"step": 0, "event": "eval", "split": cfg.eval.split, "phase": "before",
                         **flat(state.before)})


def run_loop(ctx: TrainContext, state: TrainState, callbacks: CallbackList) -> None:
    """Epochs of steps until the limit or a callback stops the run; the source replays an epoch from any
    position, so a resumed run continues exactly."""
    set_train_mode(ctx.model, ctx.plan, True)
    while state.step < state.limit and not state.should_stop:
        callbacks.on_epoch_begin(ctx, state)
        steps_before = state.step
        for group, epoch_done in ctx.source.epoch(state.epoch, state.in_epoch):
            out = train_step(ctx, state, group)
            state.advance(epoch_done)
            callbacks.on_step_end(ctx, state, out)
            if state.step >= state.limit or state.should_stop:
                break
        if state.step == steps_before:
            tc = ctx.cfg.train
            raise DataError(f"epoch {state.epoch} gave no full batch of {tc.batch_size} (× {tc.accum_steps} "
                            f"accumulation steps); the data is smaller than one step, or every sample was bad",
                            file=str(ctx.cfg.data.path))
        if state.epoch_done:
            state.epoch, state.in_epoch, state.epoch_done = state.epoch + 1, 0, False


class Trainer:
    def __init__(self, cfg: Config, model: DualEncoder, data: Dataset, run: RunDir, progress: bool = True,
                 console=None, callbacks: list | tuple = ()):
        self.cfg = cfg
        self.model = model
        self.data = data
        self.run = run
        self.progress = progress
        self.console = console
        self.callbacks = list(callbacks)  # the caller's, after the loop's own
        self.device = resolve_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.wise_base = None  # set by fit() when train.wise_ft asks for WiSE-FT

    def fit(self, resume: bool = False) -> TrainResult:
        t_start = time.time()
        ctx = build_context(self.cfg, self.model, self.data, self.run, self.progress, self.console)
        self.model, self.device = ctx.model, ctx.device
        state = build_state(ctx)
        ctx.callbacks = callbacks = CallbackList(default_callbacks(ctx) + self.callbacks)
        callbacks.on_init_end(ctx, state)
        snapshot = callbacks.get(WiseSnapshot)
        self.wise_base = snapshot.base if snapshot is not None else None
        start(ctx, state, resume)
        callbacks.on_train_begin(ctx, state)
        try:
            with run_warning_filters():
                run_loop(ctx, state, callbacks)
        finally:
            callbacks.get(Interruption).restore()
        callbacks.on_train_end(ctx, state)
        return finish(ctx, state, t_start)
