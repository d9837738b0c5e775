"""The WiSE-FT trade-off curve: one point per mixing coefficient α, target metric against general metric.

WiSE-FT (Wortsman et al. 2022) is a choice between gaining on the user's data and keeping what the base model knew;
this plot shows the whole path from the base (α = 0) to the fine-tuned model (α = 1) so the choice can be checked by
eye. Without a general set the curve is target metric against α. Agg canvas, no pyplot state (as report/plots.py).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 110
COLORS = {"line": "#0f766e", "point": "#134e4a", "chosen": "#ea580c", "text": "#475569"}


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold", color="#1e293b")
    ax.set_xlabel(xlabel, fontsize=9, color=COLORS["text"])
    ax.set_ylabel(ylabel, fontsize=9, color=COLORS["text"])
    ax.tick_params(labelsize=8, colors=COLORS["text"])
    ax.grid(True, color="#e2e8f0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def tradeoff_figure(rows: list[dict], chosen: float, metric: str, rule: str) -> Figure:
    """`rows`: {"alpha", "target", "general"?} scores sorted by α; the chosen α is drawn in orange."""
    rows = sorted(rows, key=lambda r: r["alpha"])
    has_general = all(r.get("general") is not None for r in rows)
    fig = Figure(figsize=(5.6, 4.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    alphas = [r["alpha"] for r in rows]
    ys = [r["target"] for r in rows]
    xs = [r["general"] for r in rows] if has_general else alphas
    ax.plot(xs, ys, "-", color=COLORS["line"], linewidth=1.4, zorder=1)
    for a, x, y in zip(alphas, xs, ys):
        is_chosen = abs(a - chosen) < 1e-9
        ax.scatter([x], [y], s=42 if is_chosen else 18, color=COLORS["chosen" if is_chosen else "point"], zorder=2)
        ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    color=COLORS["chosen"] if is_chosen else COLORS["text"],
                    fontweight="bold" if is_chosen else "normal")
    ax.margins(x=0.12, y=0.1)  # room for the α labels at the ends
    title = f"WiSE-FT: chosen α={chosen:g} (rule: {rule})"
    if has_general:
        _style(ax, title, f"general {metric}  (α=0 base … α=1 fine-tuned)", f"target {metric}")
    else:
        _style(ax, title, "α  (0 = base, 1 = fine-tuned)", f"target {metric}")
    return fig


def write_tradeoff_plot(path: str | Path, rows: list[dict], chosen: float, metric: str, rule: str) -> Path:
    """Draw and write atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = tradeoff_figure(rows, chosen, metric, rule)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, facecolor="white")
    tmp.replace(path)
    return path


__all__ = ["tradeoff_figure", "write_tradeoff_plot"]
