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


DIRECTIONS = ("t2i", "i2t")
METRICS = ("R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR")
"""Retrieval metrics the evaluator reports per direction where higher is better (median_rank is lower-is-better)."""


def metric_names() -> list[str]:
    """Every name `train.early_stop_metric` accepts."""
    return [f"mean_{m}" for m in METRICS] + [f"{d}/{m}" for d in DIRECTIONS for m in METRICS]


def metric_value(metrics: dict, name: str) -> float:
    """`mean_<metric>` (mean_R@10, mean_mAP) averages both directions; `t2i/R@1` style names pick one value."""
    from cliptune.eval.retrieval import mean_recall

    if name.startswith("mean_R@"):
        return mean_recall(metrics, int(name.split("@")[1]))
    if name.startswith("mean_"):
        key = name[len("mean_"):]
        return (float(metrics["t2i"][key]) + float(metrics["i2t"][key])) / 2
    direction, key = name.split("/", 1)
    return float(metrics[direction][key])
