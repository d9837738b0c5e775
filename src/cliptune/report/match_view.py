"""The match-detection part of a report: the tuned threshold, P/R/F1/accuracy/ROC AUC on validation and test, the
confusion matrix, warnings, and galleries of the worst false matches and misses on the test pairs.

A match run's metrics.json (`train/match.match_run_record`) has `threshold`, `threshold_metric`, `val.match`,
`test.match` and optionally `before.match` and `warnings`; the report shows them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MATCH_ROWS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("accuracy", "accuracy"),
              ("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC AUC"))
GALLERY_SIZE = 6


@dataclass
class MatchRow:
    label: str
    values: list[str]  # one per column


@dataclass
class PairThumb:
    thumb: str
    text: str
    score: float


@dataclass
class MatchView:
    threshold: float | None
    threshold_metric: str | None
    columns: list[str]
    rows: list[MatchRow]
    confusion: list[list[int]] | None  # test pairs: [[tn, fp], [fn, tp]]
    n_pairs: int | None
    warnings: list[str] = field(default_factory=list)
    false_matches: list[PairThumb] = field(default_factory=list)  # label 0, scored highest
    misses: list[PairThumb] = field(default_factory=list)  # label 1, scored lowest
    gallery_note: str | None = None


def _block(metrics: dict, *path: str) -> dict | None:
    node: Any = metrics
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def match_view(metrics: dict) -> MatchView | None:
    """None for a retrieval run."""
    test = _block(metrics, "test", "match") or _block(metrics, "match")
    if test is None:
        return None
    blocks = [("before (test)", _block(metrics, "before", "match")), ("validation", _block(metrics, "val", "match")),
              ("test", test)]
    blocks = [(name, block) for name, block in blocks if block is not None]
    rows = [MatchRow(label, [_fmt(block.get(key)) for _, block in blocks]) for key, label in MATCH_ROWS]
    threshold = metrics.get("threshold", test.get("threshold"))
    return MatchView(threshold=threshold if isinstance(threshold, (int, float)) else None,
                     threshold_metric=metrics.get("threshold_metric"), columns=[name for name, _ in blocks],
                     rows=rows, confusion=test.get("confusion_matrix"), n_pairs=test.get("n_pairs"),
                     warnings=[w for w in metrics.get("warnings", []) if isinstance(w, str)])


def add_match_galleries(view: MatchView, run_dir: Path, cfg, thumb: Callable[[str, Path], str],
                        progress: bool = False) -> None:
    """Fill `view.false_matches` and `view.misses` from the test pairs scored by the run's model and head; on any
    failure (moved data, unloadable model) record why in `view.gallery_note` instead."""
    try:
        records = _test_pairs(cfg)
        from cliptune.inference.match import load_matcher, score_pairs

        model, head = load_matcher(run_dir / "model")
        scores = score_pairs(model, head, records, batch_size=cfg.eval.batch_size, progress=progress).tolist()
    except Exception as err:  # noqa: BLE001 - the report must render whatever went wrong
        view.gallery_note = f"Galleries skipped: the test pairs could not be scored ({_reason(err)})."
        return
    threshold = view.threshold if view.threshold is not None else head.threshold
    scored = list(zip(scores, records))
    wrong_yes = sorted(((s, r) for s, r in scored if r.label == 0 and s >= threshold), key=lambda p: -p[0])
    wrong_no = sorted(((s, r) for s, r in scored if r.label == 1 and s < threshold), key=lambda p: p[0])
    view.false_matches = [PairThumb(thumb(r.image, run_dir), r.captions[0], s) for s, r in wrong_yes[:GALLERY_SIZE]]
    view.misses = [PairThumb(thumb(r.image, run_dir), r.captions[0], s) for s, r in wrong_no[:GALLERY_SIZE]]


def _test_pairs(cfg) -> list:
    """The evaluation split as match training saw it: one record per labelled row (not grouped by image)."""
    from cliptune.data.eval_sets import with_eval_sets
    from cliptune.data.load import load_dataset

    d = cfg.data
    data = load_dataset(d.path, format=d.format, image_root=d.image_root, on_bad_sample=d.on_bad_sample,
                        split_ratios=d.split_ratios, seed=d.split_seed, group=False)
    data = with_eval_sets(data, d, group=False)
    records = [r for r in data.split(cfg.eval.split) if r.label in (0, 1) and r.captions]
    if not records:
        raise ValueError(f"split {cfg.eval.split!r} has no labelled pairs")
    return records


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


__all__ = ["MatchView", "add_match_galleries", "match_view"]
