"""tune.png: the validation metric of every trial against its number and against the search's cumulative wall time,
with the best-so-far line (what a longer budget would have bought)."""

from __future__ import annotations

from pathlib import Path

from cliptune.tune.leaderboard import Entry
from cliptune.utils.atomic import write_atomic

PLOT_FILE = "tune.png"


def _series(entries: list[Entry]) -> tuple[list[int], list[float], list[float | None], list[str]]:
    """Per trial in run order: number, cumulative wall time at its end, score, state."""
    ordered = sorted(entries, key=lambda e: e.number)
    numbers, ends, scores, states, total = [], [], [], [], 0.0
    for e in ordered:
        total += e.wall_s or 0.0
        numbers.append(e.number)
        ends.append(total)
        scores.append(e.value if e.value is not None else e.last_reported)
        states.append(e.state)
    return numbers, ends, scores, states


def _best_so_far(scores: list[float | None], states: list[str]) -> list[float | None]:
    best, out = None, []
    for score, state in zip(scores, states):
        if state == "complete" and score is not None and (best is None or score > best):
            best = score
        out.append(best)
    return out


def _panel(ax, xs, scores, states, best, xlabel: str, metric: str) -> None:
    for state, marker, face in (("complete", "o", "tab:blue"), ("pruned", "o", "none")):
        pts = [(x, s) for x, s, st in zip(xs, scores, states) if st == state and s is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, facecolors=face, edgecolors="tab:blue", label=state, zorder=3)
    steps = [(x, b) for x, b in zip(xs, best) if b is not None]
    if steps:
        ax.step(*zip(*steps), where="post", color="tab:orange", label="best so far")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"val {metric}")
    ax.grid(alpha=0.3)


def write_plot(path: Path, entries: list[Entry], metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    numbers, ends, scores, states = _series(entries)
    best = _best_so_far(scores, states)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _panel(left, numbers, scores, states, best, "trial", metric)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    scale, unit = (60, "min") if ends and ends[-1] >= 120 else (1, "s")
    _panel(right, [e / scale for e in ends], scores, states, best, f"cumulative wall time ({unit})", metric)
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"search on the validation split ({len(entries)} trials)")
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
