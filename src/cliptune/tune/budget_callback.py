"""Stop a trial that would overrun the search's deadline, as soon as its measured pace says so.

After each step the guard projects the trial's end: the steps left at the median step time seen so far, plus the
validation evaluations still to come and the two at the end (best-checkpoint evaluation and export) at the measured
evaluation time. When that end falls after the deadline (or the deadline has passed), the trial is pruned
(`BudgetExhausted`, an `optuna.TrialPruned`), which leaves the time to trials that fit.

A trial's set-up (reading the data, building the model, extracting features into the cache) has no steps to watch
and can take minutes on a cold cache, so `arm()` sets a timer (SIGALRM, main thread, POSIX) for the time left that
raises `SetupOverrun` where the set-up has got to; the first step disarms it. The set-up writes nothing that a stop
can leave half-written (checkpoints and cache entries are atomic).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from typing import Callable

import optuna

from cliptune.train.callbacks.base import Callback
from cliptune.tune.budget import Deadline, format_seconds

TAIL_EVALUATIONS = 2  # after the loop: the best checkpoint's evaluation and the export's


class BudgetExhausted(optuna.TrialPruned):
    """The trial was stopped because it would not finish before the search's deadline."""


class SetupOverrun(BaseException):
    """Raised by the set-up timer. A BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way
    (e.g. a cache read that treats any error as a damaged entry) swallows it; `run_trial` turns it into
    `BudgetExhausted`."""


class BudgetGuard(Callback):
    def __init__(self, deadline: Deadline, clock: Callable[[], float] | None = None, min_steps: int = 2):
        self.deadline = deadline
        self.clock = clock or deadline.clock or time.monotonic
        self.min_steps = min_steps  # steps measured before a projection is trusted
        self.step_s: list[float] = []
        self.eval_s = 0.0
        self.last: float | None = None
        self.evaluated = False
        self.armed = False

    def arm(self) -> None:
        """Stop the set-up when the deadline passes (a no-op where there is no SIGALRM or off the main thread)."""
        if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, self.deadline.remaining()))
        self.armed = True

    def disarm(self) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            self.armed = False

    def _alarm(self, signum, frame) -> None:
        self.disarm()
        raise SetupOverrun("budget spent during the trial's set-up (data, model, feature caching)")

    def on_train_begin(self, ctx, state) -> None:
        """Set-up (data, model, feature caching) is done: a trial whose set-up used up the budget stops here."""
        self.disarm()
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
