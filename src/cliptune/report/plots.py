"""Training and evaluation plots for the report, drawn from the run directory's own files.

Each plot is a function `(RunData) -> Figure | None` registered under a name: it returns None when the run holds no
data for it (no match block, a single logged step), so a report shows what the run has and never an empty axis.
Figures are built with the object-oriented matplotlib API on the Agg canvas: no pyplot state, no display needed,
safe to call from a training process or a server thread.

Match-task plots read an optional `match` block of metrics.json, the shape of `eval.matching.match_metrics`:
    {"pr_curve": {"precision": [...], "recall": [...]},                        # points of the PR curve
     "threshold": 0.31, "precision": 0.9, "recall": 0.8, "f1": 0.85,          # the chosen operating point
     "average_precision": 0.88 (optional),
     "confusion_matrix": [[tn, fp], [fn, tp]], "labels": ["mismatch", "match"] (optional)}  # rows true
either directly or per split as {"test": {...}, "val": {...}} (the test split is plotted when present).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cliptune.utils.registry import Registry

PLOT_DIR = "plots"
DPI = 110
SIZE = (5.6, 3.3)  # inches: two plots side by side fit a laptop screen
COLORS = {"t2i": "#2563eb", "i2t": "#ea580c", "main": "#0f766e", "smooth": "#134e4a", "muted": "#94a3b8"}
MIN_POINTS = 2  # a curve needs two logged steps (train.log_every); one dot on an empty axis says nothing
VAL_METRICS = (("t2i/R@1", "text→image R@1", "t2i", "-"), ("t2i/R@10", "text→image R@10", "t2i", "--"),
               ("i2t/R@1", "image→text R@1", "i2t", "-"), ("i2t/R@10", "image→text R@10", "i2t", "--"))


@dataclass
class RunData:
    """What the plots read: history.jsonl entries and metrics.json (either may be empty)."""

    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunData":
        run_dir = Path(run_dir)
        history: list[dict] = []
        path = run_dir / "history.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
                    continue
                if isinstance(entry, dict):
                    history.append(entry)
        metrics_path = run_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
        except json.JSONDecodeError:
            metrics = {}
        return cls(history=history, metrics=metrics if isinstance(metrics, dict) else {})

    def train_series(self, key: str) -> tuple[list[float], list[float]]:
        points = [(e["step"], e[key]) for e in self.history
                  if e.get("event") == "train" and _finite(e.get(key)) and _finite(e.get("step"))]
        return [p[0] for p in points], [p[1] for p in points]

    def val_entries(self) -> list[dict]:
        """Evaluations during training (the before/after test evaluations carry a `phase` and are left out)."""
        return [e for e in self.history if e.get("event") == "eval" and not e.get("phase") and _finite(e.get("step"))]


@dataclass(frozen=True)
class Plot:
    title: str
    draw: Callable[[RunData], Figure | None]
    order: int


@dataclass(frozen=True)
class PlotFile:
    name: str
    title: str
    path: Path


PLOTS: Registry[Plot] = Registry("plot")


def plot(name: str, title: str, order: int):
    def register(draw: Callable[[RunData], Figure | None]):
        PLOTS.register(name)(Plot(title, draw, order))
        return draw

    return register


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figure(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if xlabel == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold", color="#1e293b")
    ax.set_xlabel(xlabel, fontsize=9, color="#475569")
    ax.set_ylabel(ylabel, fontsize=9, color="#475569")
    ax.tick_params(labelsize=8, colors="#475569")
    ax.grid(True, color="#e2e8f0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#cbd5e1")
    return fig, ax


def _ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard-style exponential smoothing, bias-corrected so the first points are not pulled towards 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def _line(ax, steps: list[float], values: list[float], color: str, label: str | None = None, style: str = "-"):
    marker = "o" if len(steps) <= 30 else None
    ax.plot(steps, values, style, color=color, label=label, linewidth=1.6, marker=marker, markersize=3.5)


def _curve(data: RunData, key: str, title: str, ylabel: str, smooth: bool = False, log: bool = False):
    steps, values = data.train_series(key)
    if len(steps) < MIN_POINTS:
        return None
    fig, ax = _figure(title, "step", ylabel)
    if smooth and len(values) >= 20:
        ax.plot(steps, values, color=COLORS["main"], alpha=0.25, linewidth=1)
        ax.plot(steps, _ema(values, 0.9), color=COLORS["smooth"], linewidth=1.8, label="smoothed (EMA 0.9)")
        ax.legend(fontsize=8, frameon=False)
    else:
        _line(ax, steps, values, COLORS["main"])
    if log and min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")
    return fig


@plot("loss", "Training loss", order=10)
def loss_curve(data: RunData) -> Figure | None:
    return _curve(data, "loss", "Training loss", "loss", smooth=True)


@plot("lr", "Learning rate", order=20)
def lr_curve(data: RunData) -> Figure | None:
    fig = _curve(data, "lr", "Learning rate", "learning rate")
    if fig is not None:
        fig.axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return fig


@plot("logit_scale", "Logit scale", order=30)
def logit_scale_curve(data: RunData) -> Figure | None:
    """exp(logit_scale) = 1 / temperature (CLIP caps it at 100); a collapse or blow-up shows here first. Not drawn
    when it never moved (frozen, as in match runs, whose head has its own scale): a flat line says nothing."""
    values = [v for v in data.train_series("logit_scale")[1] if _finite(v)]
    if values and max(values) - min(values) <= 1e-6 * max(1.0, abs(max(values))):
        return None
    return _curve(data, "logit_scale", "Logit scale (1 / temperature)", "scale")


@plot("val_recall", "Validation recall", order=40)
def val_recall_curves(data: RunData) -> Figure | None:
    entries = data.val_entries()
    if len(entries) < MIN_POINTS:
        return None
    split = entries[-1].get("split", "val")
    entries = [e for e in entries if e.get("split", "val") == split]
    fig, ax = _figure(f"Recall on the {split} split", "step", "recall")
    drawn = False
    for key, label, side, style in VAL_METRICS:
        points = [(e["step"], e[key]) for e in entries if _finite(e.get(key))]
        if points:
            _line(ax, [p[0] for p in points], [p[1] for p in points], COLORS[side], label, style)
            drawn = True
    if not drawn:
        return None
    ax.set_ylim(-0.02, 1.02)
    fig.legend(fontsize=8, frameon=False, ncols=2, loc="outside lower center", handlelength=3.2)
    return fig


def _match(data: RunData) -> dict:
    block = data.metrics.get("match")
    if not isinstance(block, dict):
        return {}
    for split in ("test", "val"):  # per-split blocks: the held-out test split is the honest one
        if isinstance(block.get(split), dict):
            return {"threshold": block.get("threshold"), **block[split]}
    return block


@plot("match_pr", "Match precision–recall", order=50)
def match_pr_curve(data: RunData) -> Figure | None:
    curve = _match(data).get("pr_curve") or _match(data).get("curve") or {}
    precision, recall = curve.get("precision"), curve.get("recall")
    if not isinstance(precision, list) or not isinstance(recall, list) or len(precision) != len(recall) \
            or len(precision) < 2:
        return None
    block = _match(data)
    title = "Match: precision vs recall"
    if _finite(block.get("average_precision")):
        title += f" (AP {block['average_precision']:.3f})"
    fig, ax = _figure(title, "recall", "precision")
    # recall decreasing + steps-post: each precision holds down to the next lower recall (as sklearn draws it)
    points = sorted(zip(recall, precision), key=lambda p: -p[0])
    ax.plot([p[0] for p in points], [p[1] for p in points], color=COLORS["main"], linewidth=1.8,
            drawstyle="steps-post")
    if _finite(block.get("precision")) and _finite(block.get("recall")):
        label = "operating point" + (f" (threshold {block['threshold']:.3g})" if _finite(block.get("threshold"))
                                     else "")
        ax.plot([block["recall"]], [block["precision"]], "o", color=COLORS["i2t"], markersize=7, label=label)
        ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    return fig


@plot("match_confusion", "Match confusion matrix", order=60)
def match_confusion_matrix(data: RunData) -> Figure | None:
    block = _match(data)
    matrix = block.get("confusion_matrix") or block.get("confusion")
    if isinstance(matrix, dict) and {"tn", "fp", "fn", "tp"} <= set(matrix):
        matrix = [[matrix["tn"], matrix["fp"]], [matrix["fn"], matrix["tp"]]]
    if not isinstance(matrix, list) or not matrix or any(not isinstance(r, list) or len(r) != len(matrix)
                                                         for r in matrix):
        return None
    n = len(matrix)
    labels = block.get("labels") if isinstance(block.get("labels"), list) and len(block["labels"]) == n \
        else (["mismatch", "match"] if n == 2 else [str(i) for i in range(n)])
    fig = Figure(figsize=(SIZE[1] * 1.25, SIZE[1]), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("Match: confusion matrix", fontsize=11, loc="left", fontweight="bold", color="#1e293b")
    ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=11,
                    color="white" if value > peak / 2 else "#1e293b")
    ax.set_xticks(range(n), labels, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted", fontsize=9, color="#475569")
    ax.set_ylabel("true", fontsize=9, color="#475569")
    return fig


def make_plots(run_dir: str | Path, data: RunData | None = None) -> list[PlotFile]:
    """Draw every plot the run has data for into `run_dir/plots/<name>.png`; returns them in display order.

    Stale files of plots that no longer apply are removed, so `plots/` always matches the report.
    """
    run_dir = Path(run_dir)
    data = data or RunData.load(run_dir)
    out_dir = run_dir / PLOT_DIR
    written = []
    for name in sorted(PLOTS.names(), key=lambda n: PLOTS.get(n).order):
        spec = PLOTS.get(name)
        path = out_dir / f"{name}.png"
        fig = spec.draw(data)
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=DPI, facecolor="white")
        tmp.replace(path)
        written.append(PlotFile(name, spec.title, path))
    return written
