"""Optuna pruning through the trainer's callback protocol: every validation evaluation is reported to the trial,
and a trial the pruner gives up on stops at once (`optuna.TrialPruned` propagates out of `train_run`)."""

from __future__ import annotations

import optuna

from cliptune.train.callbacks.base import Callback, Evaluation


class OptunaPruning(Callback):
    """Reports `evaluation.score` (train.early_stop_metric on val) at its step; raises TrialPruned when told to."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_evaluate(self, ctx, state, evaluation: Evaluation) -> None:
        if evaluation.score is None:
            return
        self.trial.report(float(evaluation.score), evaluation.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {evaluation.step} (validation score {evaluation.score:.4f})")
