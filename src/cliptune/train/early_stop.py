"""Early stopping with patience on a validation metric (higher is better); also decides which step is `best`."""

from __future__ import annotations


class EarlyStopping:
    def __init__(self, patience: int | None, metric: str, min_delta: float = 0.0):
        self.patience = patience
        self.metric = metric
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def update(self, score: float, step: int) -> bool:
        """Record one evaluation; True when it becomes `best`.

        A tie with the best score also moves `best` to the later, longer-trained checkpoint (a saturated metric such
        as R@10 on a small validation set would otherwise pin `best` to an early step), but it does not reset the
        patience counter: only a real improvement does.
        """
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.best_step, self.bad_evals = score, step, 0
            return True
        self.bad_evals += 1
        if score >= self.best:
            self.best_step = step
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state(self, state: dict) -> None:
        self.best = state.get("best")
        self.best_step = state.get("best_step")
        self.bad_evals = state.get("bad_evals", 0)
