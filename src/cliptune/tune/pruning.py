"""Optuna pruning through the trainer's callback protocol: every validation evaluation is reported to the trial,
and a trial the pruner gives up on stops at once (`optuna.TrialPruned` propagates out of `train_run`)."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import optuna

from cliptune.train.callbacks.base import Callback, Evaluation


class OptunaPruning(Callback):
    """Reports `evaluation.score` (train.early_stop_metric on val) at its step; raises TrialPruned when told to."""

    def __init__(self, trial: optuna.Trial, shield: Callable[[], ContextManager] = contextlib.nullcontext):
        self.trial = trial
        self.shield = shield  # around the study write (DeadlineTimer.shielded: no alarm in the middle of it)

    def on_evaluate(self, ctx, state, evaluation: Evaluation) -> None:
        if evaluation.score is None:
            return
        with self.shield():
            self.trial.report(float(evaluation.score), evaluation.step)
            prune = self.trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"pruned at step {evaluation.step} (validation score {evaluation.score:.4f})")
