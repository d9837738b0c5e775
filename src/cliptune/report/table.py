"""The before | probe | after table printed at the end of `train` (two-way for `eval` and older runs)."""

from __future__ import annotations

from rich import box
from rich.table import Table

from cliptune.train.metrics_file import metrics_record  # noqa: F401  (the metrics.json shape, re-exported)
from cliptune.utils.atomic import write_json_atomic  # noqa: F401  (re-exported)

TABLE_METRICS = ("R@1", "R@5", "R@10", "mAP")


def point_change(before: float, after: float) -> str:
    """The change in percentage points (R@10 0.001 → 0.168 is "+16.7 pts"): a relative change of a near-zero
    baseline ("+16700%") says nothing about how good the result is."""
    return f"{(after - before) * 100:+.1f} pts"


DIRECTION_LABELS = (("t2i", "text→image"), ("i2t", "image→text"))
SHORT = {"t2i": "t→i", "i2t": "i→t"}
# the gain columns of the three-way table: (gains key, header)
GAIN_COLUMNS = (("after-probe", "after−probe"), ("after-before", "after−before"))


def gain_cell(gain: dict | None, model: dict | None, baseline: dict | None, direction: str, metric: str) -> str:
    """A gain in points with its 95% bootstrap interval ("+3.1 [0.8, 5.4]"); the plain point change when the run
    kept no interval for it (an older run), "–" when a model is missing."""
    if gain is not None:
        g = gain[direction][metric]
        return f"{g['delta'] * 100:+.1f} [{g['low'] * 100:.1f}, {g['high'] * 100:.1f}]"
    if model is None or baseline is None:
        return "–"
    return point_change(baseline[direction][metric], model[direction][metric]).removesuffix(" pts")


def _two_way(after: dict, before: dict | None, title: str) -> Table:
    table = Table(title=title)
    table.add_column("direction")
    table.add_column("metric")
    if before is not None:
        table.add_column("before", justify="right")
    table.add_column("after" if before is not None else "value", justify="right")
    if before is not None:
        table.add_column("change (points)", justify="right")
    for direction, label in DIRECTION_LABELS:
        for metric in TABLE_METRICS:
            a = after[direction][metric]
            if before is None:
                table.add_row(label, metric, f"{a:.4f}")
            else:
                b = before[direction][metric]
                table.add_row(label, metric, f"{b:.4f}", f"{a:.4f}", point_change(b, a))
    return table


def _three_way(after: dict, before: dict | None, probe: dict | None, gains: dict, title: str) -> Table:
    """before | probe | after | after−probe | after−before: the gains in points with their 95% intervals (fits in
    80 columns, so a log file shows it unwrapped)."""
    models = {"after": after, "before": before, "probe": probe}
    table = Table(title=title, caption="t→i text→image · i→t image→text · gains in points [95% bootstrap CI]",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", no_wrap=True)
    for name in ("before", "probe", "after"):
        table.add_column(name, justify="right", no_wrap=True)
    for key, header in GAIN_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for direction, _ in DIRECTION_LABELS:
        for metric in TABLE_METRICS:
            values = [f"{m[direction][metric]:.4f}" if m is not None else "–"
                      for m in (before, probe, after)]
            cells = [gain_cell(gains.get(key), models[key.split("-")[0]], models[key.split("-")[1]], direction,
                               metric) for key, _ in GAIN_COLUMNS]
            table.add_row(f"{SHORT[direction]} {metric}", *values, *cells)
        if direction == "t2i":
            table.add_section()
    return table


def comparison_table(after: dict, before: dict | None = None, title: str = "retrieval", probe: dict | None = None,
                     gains: dict | None = None) -> Table:
    """The retrieval table: before | probe | after with the gains and their intervals when the run has a probe or
    gains (metrics.json `probe`/`gains`), the two-way before | after table otherwise (older runs, `eval`)."""
    if probe is None and not gains:
        return _two_way(after, before, title)
    return _three_way(after, before, probe, gains or {}, title)


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


def results_table(after: dict, before: dict | None = None, title: str = "retrieval", probe: dict | None = None,
                  gains: dict | None = None) -> Table:
    """The match table for match runs, the retrieval table otherwise (three-way when given a probe or gains)."""
    if "match" in after:
        return match_table(after, before, title)
    return comparison_table(after, before, title, probe=probe, gains=gains)
