"""The time budget of a search (`--budget 20m`, `90s`, `1h`, `1h30m`) and the deadline it sets.

The budget covers the trials; it is parsed and validated before anything is created. A resumed search gets what the
first run left (budget − time already spent), so `spent_s` travels in tune.json.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

from cliptune.errors import UsageError

_BUDGET = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_budget(text: str) -> float:
    """Seconds in `text` (hours, minutes and seconds in that order, each optional: `90s`, `20m`, `1h30m`)."""
    raw = str(text).strip().lower()
    match = _BUDGET.match(raw)
    if not raw or match is None or not any(match.groupdict().values()):
        raise UsageError(f"--budget {text!r}: expected a duration such as 90s, 20m, 1h or 1h30m")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise UsageError(f"--budget {text!r}: the budget must be longer than zero")
    return float(seconds)


def format_seconds(seconds: float) -> str:
    """`1h02m`, `4m05s`, `42s`: how long, for people."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class Deadline:
    """When the search must end: `budget_s` minus what earlier runs of it spent, counted from `started` on `clock`
    (injectable, so tests can move time)."""

    budget_s: float
    spent_before_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def spent(self) -> float:
        """Seconds of the budget used so far, earlier runs included."""
        return self.spent_before_s + (self.clock() - self.started)

    def remaining(self) -> float:
        return self.budget_s - self.spent()
