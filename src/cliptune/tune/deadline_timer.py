"""A hard stop at the search's deadline, wherever a trial has got to.

`BudgetGuard` stops a trial early from its measured pace, but it can only act between steps: a trial's set-up
(reading the data, building the model, extracting features into a cold cache) can take minutes, and one step of a
large configuration tens of seconds. The timer (SIGALRM, main thread, POSIX) raises `DeadlineReached` when the
budget is spent. Everything a trial writes on the way is atomic (checkpoints, cache entries, JSON files), so an
exception at any point is no worse than a kill; writes to the study's database are `shielded()`: an alarm during one
is deferred until it ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from cliptune.tune.budget import Deadline


class DeadlineReached(BaseException):
    """A BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way (e.g. a cache read that
    treats any error as a damaged entry) swallows it; `run_trial` turns it into a pruned trial."""


class DeadlineTimer:
    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.armed = False
        self.shield = 0  # nesting depth of shielded sections
        self.pending = False  # the alarm rang inside a shielded section

    @staticmethod
    def available() -> bool:
        return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    def arm(self) -> None:
        """Ring at the deadline (a no-op where there is no SIGALRM or off the main thread)."""
        if not self.available():
            return
        signal.signal(signal.SIGALRM, self._ring)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, self.deadline.remaining()))
        self.armed = True

    def disarm(self) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            self.armed = False

    def _ring(self, signum, frame) -> None:
        if self.shield:
            self.pending = True
            return
        self.disarm()
        raise DeadlineReached("the budget ran out during this trial")

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Defer the alarm until the block ends (a database write must not be cut in half)."""
        self.shield += 1
        try:
            yield
        finally:
            self.shield -= 1
        if self.pending and not self.shield:
            self.pending = False
            self.disarm()
            raise DeadlineReached("the budget ran out during this trial")
