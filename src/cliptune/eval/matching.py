"""Image–text match detection metrics: pure functions over scores and 0/1 labels (1 = the text fits the image).

A pair is predicted a match when `score >= threshold`. `tune_threshold` picks the threshold that maximises a metric
on held-out pairs (validation), `match_metrics` reports a threshold's confusion matrix and the threshold-free
ROC AUC and precision–recall curve. Conventions follow scikit-learn (`precision_recall_fscore_support` with
zero_division=0, `roc_auc_score`, `precision_recall_curve`), which the tests cross-check.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("f1", "accuracy", "balanced_accuracy")
PR_POINTS = 200


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if len(s) == 0:
        raise ValueError("no pairs to score")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (mismatch) or 1 (match)")
    return s, y.astype(np.int64)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def _from_counts(tp, fp, fn, tn, metric: str):
    """Metric from confusion counts (scalars or arrays over candidate thresholds)."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "f1":
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if metric == "accuracy":
            return (tp + tn) / (tp + fp + fn + tn)
        if metric == "balanced_accuracy":
            tpr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            tnr = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
            return (tpr + tnr) / 2
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def _sweep(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order and, for `score >= value`, the true and false positive counts."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_value = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_value]
    fps = (last_of_value + 1) - tps
    return s_sorted[last_of_value], tps, fps


def tune_threshold(scores: Sequence[float], labels: Sequence[int], metric: str = "f1") -> float:
    """The threshold maximising `metric` (f1, accuracy, balanced_accuracy) for `score >= threshold` on these pairs.

    Candidates lie halfway between consecutive distinct scores (so a tuned threshold does not sit on a training
    score), plus just above the highest score (predict nothing). Ties go to the higher threshold.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    s, y = _arrays(scores, labels)
    values, tps, fps = _sweep(s, y)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    # candidate j predicts the top j distinct values; j = 0 predicts nothing
    tp = np.r_[0, tps]
    fp = np.r_[0, fps]
    value = _from_counts(tp, fp, n_pos - tp, n_neg - fp, metric)
    best = int(np.argmax(value))  # first maximum = highest threshold
    if best == 0:
        return float(np.nextafter(values[0], np.inf))
    if best == len(values):
        return float(values[-1])
    return float((values[best - 1] + values[best]) / 2)


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (the Mann–Whitney probability, ties counted half); None with a single class."""
    s, y = _arrays(scores, labels)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.r_[0, np.nonzero(np.diff(s_sorted))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)  # 1-based, averaged within ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_curve(scores: Sequence[float], labels: Sequence[int], max_points: int = PR_POINTS) -> dict[str, list[float]]:
    """Precision and recall at every distinct threshold, recall increasing to the final (recall 0, precision 1) point
    as sklearn's `precision_recall_curve`, evenly subsampled (end points kept) to at most `max_points`."""
    s, y = _arrays(scores, labels)
    _, tps, fps = _sweep(s, y)
    n_pos = int(y.sum())
    precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 1.0)
    recall = tps / n_pos if n_pos else np.ones_like(tps, dtype=np.float64)
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    if len(precision) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(precision) - 1, max_points)).astype(int))
        precision, recall = precision[keep], recall[keep]
    return {"precision": [float(p) for p in precision], "recall": [float(r) for r in recall]}


def match_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict:
    """accuracy, precision, recall, f1 at `threshold` (match when score >= threshold), roc_auc (None with one class),
    confusion_matrix [[tn, fp], [fn, tp]], threshold, n_pairs and pr_curve {precision, recall} (≤ 200 points)."""
    s, y = _arrays(scores, labels)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return {
        "accuracy": _ratio(tp + tn, len(y)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": float(_from_counts(tp, fp, fn, tn, "f1")),
        "balanced_accuracy": float(_from_counts(tp, fp, fn, tn, "balanced_accuracy")),
        "roc_auc": roc_auc(s, y),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": float(threshold),
        "n_pairs": int(len(y)),
        "n_matches": int(y.sum()),
        "pr_curve": pr_curve(s, y),
    }
