"""Stop a trial that would overrun the search's deadline, as soon as its measured pace says so.

After each step the guard projects the trial's end: the steps left at the median step time seen so far, plus the
validation evaluations still to come and the two at the end (best-checkpoint evaluation and export) at the measured
evaluation time. When that end falls after the deadline (or the deadline has passed), the trial is pruned
(`BudgetExhausted`, an `optuna.TrialPruned`), which leaves the time to trials that fit.
The hard stop at the deadline itself (during a set-up or a long step) is `deadline_timer.DeadlineTimer`.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import optuna

from cliptune.train.callbacks.base import Callback
from cliptune.tune.budget import Deadline, format_seconds

TAIL_EVALUATIONS = 2  # after the loop: the best checkpoint's evaluation and the export's


class BudgetExhausted(optuna.TrialPruned):
    """The trial was stopped because it would not finish before the search's deadline."""


class BudgetGuard(Callback):
    def __init__(self, deadline: Deadline, clock: Callable[[], float] | None = None, min_steps: int = 2):
        self.deadline = deadline
        self.clock = clock or deadline.clock or time.monotonic
        self.min_steps = min_steps  # steps measured before a projection is trusted
        self.step_s: list[float] = []
        self.eval_s = 0.0
        self.last: float | None = None
        self.evaluated = False

    def on_train_begin(self, ctx, state) -> None:
        """Set-up (data, model, feature caching) is done: a trial whose set-up used up the budget stops here."""
        if self.deadline.remaining() <= 0:
            raise BudgetExhausted(f"budget spent during the trial's set-up, before step {state.step + 1}")
        self.last = self.clock()

    def on_evaluate(self, ctx, state, evaluation) -> None:
        self.evaluated = True

    def on_step_end(self, ctx, state, out) -> None:
        now = self.clock()
        elapsed, self.last = now - (self.last if self.last is not None else now), now
        if self.evaluated and self.step_s:  # this step's time includes an evaluation
            self.eval_s = max(self.eval_s, elapsed - statistics.median(self.step_s))
        else:
            self.step_s.append(elapsed)
        self.evaluated = False
        self.check(state, _steps_per_eval(ctx))

    def projected_s(self, steps_left: int, steps_per_eval: int) -> float:
        """Seconds the trial still needs at its measured pace."""
        evals_left = steps_left // max(1, steps_per_eval) + TAIL_EVALUATIONS
        return steps_left * statistics.median(self.step_s) + evals_left * self.eval_s

    def check(self, state, steps_per_eval: int) -> None:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise BudgetExhausted(f"budget spent at step {state.step}")
        if len(self.step_s) < self.min_steps:
            return
        needed = self.projected_s(state.limit - state.step, steps_per_eval)
        if needed > remaining:
            raise BudgetExhausted(f"stopped at step {state.step} of {state.limit}: it needs about "
                                  f"{format_seconds(needed)} more, {format_seconds(remaining)} of the budget is left")


def _steps_per_eval(ctx) -> int:
    every = ctx.cfg.train.eval_every
    return int(every or getattr(ctx.source, "steps_per_epoch", None) or 1)
