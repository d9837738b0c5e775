"""The before/after table printed at the end of `train` and by `eval`, and the metrics.json layout (DESIGN.md)."""

from __future__ import annotations

from rich.table import Table

from cliptune.train.metrics_file import metrics_record  # noqa: F401  (the metrics.json shape, re-exported)
from cliptune.utils.atomic import write_json_atomic  # noqa: F401  (re-exported)

TABLE_METRICS = ("R@1", "R@5", "R@10", "mAP")


def point_change(before: float, after: float) -> str:
    """The change in percentage points (R@10 0.001 → 0.168 is "+16.7 pts"): a relative change of a near-zero
    baseline ("+16700%") says nothing about how good the result is."""
    return f"{(after - before) * 100:+.1f} pts"


def comparison_table(after: dict, before: dict | None = None, title: str = "retrieval") -> Table:
    table = Table(title=title)
    table.add_column("direction")
    table.add_column("metric")
    if before is not None:
        table.add_column("before", justify="right")
    table.add_column("after" if before is not None else "value", justify="right")
    if before is not None:
        table.add_column("change (points)", justify="right")
    for direction, label in (("t2i", "text→image"), ("i2t", "image→text")):
        for metric in TABLE_METRICS:
            a = after[direction][metric]
            if before is None:
                table.add_row(label, metric, f"{a:.4f}")
            else:
                b = before[direction][metric]
                table.add_row(label, metric, f"{b:.4f}", f"{a:.4f}", point_change(b, a))
    return table


MATCH_TABLE_METRICS = ("precision", "recall", "f1", "accuracy", "roc_auc")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def match_table(after: dict, before: dict | None = None, title: str = "match detection") -> Table:
    """Precision/recall/F1/accuracy/ROC AUC of a match run on the test pairs, before and after training, at the
    threshold tuned on validation (`after["match"]`, `before["match"]`, as `eval/matching.match_metrics` gives)."""
    a, b = after["match"], (before or {}).get("match")
    table = Table(title=f"{title} (threshold {a['threshold']:.4f}, {a['n_pairs']} pairs)")
    table.add_column("metric")
    if b is not None:
        table.add_column("before", justify="right")
    table.add_column("after" if b is not None else "value", justify="right")
    if b is not None:
        table.add_column("change (points)", justify="right")
    for metric in MATCH_TABLE_METRICS:
        if b is None:
            table.add_row(metric, _fmt(a[metric]))
            continue
        change = "n/a" if a[metric] is None or b[metric] is None else point_change(b[metric], a[metric])
        table.add_row(metric, _fmt(b[metric]), _fmt(a[metric]), change)
    return table


def results_table(after: dict, before: dict | None = None, title: str = "retrieval") -> Table:
    """The match table for match runs, the retrieval table otherwise."""
    return (match_table if "match" in after else comparison_table)(after, before, title)
