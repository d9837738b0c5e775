"""The callback protocol: how everything that is not the optimisation step joins the loop, and how a caller
observes (or stops) a run — as HF's `TrainerCallback`.

Hooks, in the order the loop calls them:
  on_init_end(ctx, state)       set up, before a checkpoint is restored (the weights training starts from)
  on_train_begin(ctx, state)    restored or baselined, just before the first step
  on_epoch_begin(ctx, state)    before the first step of an epoch (also of a resumed, partial one)
  on_step_end(ctx, state, out)  after each optimisation step; `state.step` already counts it
  on_evaluate(ctx, state, ev)   after each validation evaluation (`ev.metrics`, `ev.score`, `ev.is_best`)
  on_train_end(ctx, state)      after the last step, before the final evaluation and export
A callback ends the run after the current step by setting `state.should_stop = True`, or at once by raising (an
exception raised from `on_evaluate` propagates to the caller of `fit`, e.g. an Optuna `TrialPruned`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cliptune.train.context import TrainContext
    from cliptune.train.state import TrainState
    from cliptune.train.step import StepOutput


@dataclass
class Evaluation:
    step: int
    metrics: dict  # as the evaluator returns them (t2i/i2t blocks, or match)
    score: float | None  # train.early_stop_metric of `metrics` (None for the match task)
    is_best: bool


@runtime_checkable
class TrainerCallback(Protocol):
    """Implement any subset of the hooks; `Callback` gives no-op defaults for the rest."""

    def on_step_end(self, ctx: "TrainContext", state: "TrainState", out: "StepOutput") -> None: ...


class Callback:
    def on_init_end(self, ctx: "TrainContext", state: "TrainState") -> None:
        pass

    def on_train_begin(self, ctx: "TrainContext", state: "TrainState") -> None:
        pass

    def on_epoch_begin(self, ctx: "TrainContext", state: "TrainState") -> None:
        pass

    def on_step_end(self, ctx: "TrainContext", state: "TrainState", out: "StepOutput") -> None:
        pass

    def on_evaluate(self, ctx: "TrainContext", state: "TrainState", evaluation: Evaluation) -> None:
        pass

    def on_train_end(self, ctx: "TrainContext", state: "TrainState") -> None:
        pass


HOOKS = ("on_init_end", "on_train_begin", "on_epoch_begin", "on_step_end", "on_evaluate", "on_train_end")


class CallbackList:
    """Calls each hook on every callback in order; a callback may define only some hooks."""

    def __init__(self, callbacks: list):
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)

    def on_init_end(self, ctx, state) -> None:
        self._call("on_init_end", ctx, state)

    def on_train_begin(self, ctx, state) -> None:
        self._call("on_train_begin", ctx, state)

    def on_epoch_begin(self, ctx, state) -> None:
        self._call("on_epoch_begin", ctx, state)

    def on_step_end(self, ctx, state, out) -> None:
        self._call("on_step_end", ctx, state, out)

    def on_evaluate(self, ctx, state, evaluation: Evaluation) -> None:
        self._call("on_evaluate", ctx, state, evaluation)

    def on_train_end(self, ctx, state) -> None:
        self._call("on_train_end", ctx, state)

    def get(self, kind: type):
        """The first callback of `kind`, or None."""
        return next((c for c in self.callbacks if isinstance(c, kind)), None)
