"""`report.html` for a run directory: the resolved config, before/after metrics, training curves and retrieval
galleries (top-5 images per sample caption, before vs after fine-tuning, ground truth marked).

The page is self-contained: styles are inline, plots are `plots/*.png` and thumbnails `report_assets/thumbs/*.jpg`
next to it, all by relative path, so the run directory can be zipped, copied or served as is.

Galleries need the base model and the data again; when either cannot be loaded (a moved dataset, an unavailable
backend), the page still renders, with a note saying why the galleries are missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliptune.errors import UsageError
from cliptune.report.match_view import add_match_galleries, match_view
from cliptune.report.plots import PlotFile, RunData, make_plots

if TYPE_CHECKING:
    from cliptune.data.records import Dataset, Record
    from cliptune.models.base import DualEncoder

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
ASSETS_DIR = "report_assets"
THUMB_DIR = f"{ASSETS_DIR}/thumbs"
THUMB_SIZE = 160
TOP_K = 5
MAX_POOL_IMAGES = 2000  # gallery retrieval pool: the whole test split up to this size, a seeded subset beyond
QUERY_SEED = 0

# metric, label, higher is better
TABLE_ROWS = (("R@1", "R@1", True), ("R@5", "R@5", True), ("R@10", "R@10", True), ("mAP", "mAP", True),
              ("NDCG@10", "NDCG@10", True), ("MRR", "MRR", True), ("median_rank", "median rank", False))
DIRECTIONS = (("t2i", "text → image"), ("i2t", "image → text"))


# ---- view models ----------------------------------------------------------------------------------------------------
@dataclass
class MetricRow:
    label: str
    before: str | None
    after: str
    delta: str | None  # absolute change in points, e.g. "+16.7 pts", with its 95% interval when the run has one
    trend: str  # "better", "worse" or "same": a CSS class
    probe: str | None = None  # the probe's value (frozen towers, re-fitted heads), when the run has one
    over_probe: str | None = None  # after − probe in points, with its 95% interval when the run has one
    over_probe_trend: str = "same"


@dataclass
class Hit:
    thumb: str
    caption: str
    score: float
    is_truth: bool


@dataclass
class GallerySide:
    title: str  # "before" / "after"
    model: str
    hits: list[Hit] = field(default_factory=list)
    truth_rank: int | None = None
    note: str | None = None


@dataclass
class GalleryQuery:
    text: str
    truth_thumb: str
    sides: list[GallerySide]


@dataclass
class Gallery:
    queries: list[GalleryQuery] = field(default_factory=list)
    pool: int = 0
    split_size: int = 0
    split: str = "test"
    notes: list[str] = field(default_factory=list)


# ---- metrics table --------------------------------------------------------------------------------------------------
def _fmt(metric: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:g}" if metric == "median_rank" else f"{value:.4f}"


def _change(before: Any, after: Any, higher_is_better: bool, points: bool = True) -> tuple[str | None, str]:
    """The change as an absolute difference: in percentage points for rates in [0, 1] (R@1 0.001 → 0.168 is
    "+16.7 pts"; a relative "+16700%" of a near-zero baseline says nothing), plain for counts such as a rank."""
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return None, "same"
    if after == before:
        return ("±0 pts" if points else "±0"), "same"
    trend = "better" if (after > before) == higher_is_better else "worse"
    if points:
        return f"{(after - before) * 100:+.1f} pts", trend
    return f"{after - before:+g}", trend


def _with_interval(change: str | None, gains: dict, pair: str, direction: str, metric: str) -> str | None:
    """"+16.7 pts" → "+16.7 pts [12.0, 21.5]" when metrics.json has the gain's bootstrap interval."""
    gain = ((gains.get(pair) or {}).get(direction) or {}).get(metric)
    if change is None or not isinstance(gain, dict):
        return change
    return f"{change} [{gain['low'] * 100:.1f}, {gain['high'] * 100:.1f}]"


def _row(key: str, label: str, higher: bool, direction: str, blocks: dict, gains: dict) -> MetricRow:
    a, b, p = (blocks[name].get(direction) or {} if blocks[name] else None for name in ("after", "before", "probe"))
    points = key != "median_rank"

    def change(base: dict | None, pair: str) -> tuple[str | None, str]:
        if base is None:
            return None, "same"
        text, trend = _change(base.get(key), a[key], higher, points=points)
        return _with_interval(text, gains, pair, direction, key), trend

    delta, trend = change(b, "after-before")
    over_probe, over_probe_trend = change(p, "after-probe")
    return MetricRow(label, _fmt(key, b.get(key)) if b is not None else None, _fmt(key, a[key]), delta, trend,
                     _fmt(key, p.get(key)) if p is not None else None, over_probe, over_probe_trend)


def metric_tables(metrics: dict) -> list[tuple[str, list[MetricRow]]]:
    """Per direction, one row per metric with before, probe (when the run has one), after and the changes, with
    their bootstrap intervals when metrics.json has `gains` (empty without metrics)."""
    after = metrics.get("after") or (metrics if "t2i" in metrics else None)
    if not isinstance(after, dict):
        return []
    blocks = {"after": after, **{name: metrics.get(name) if isinstance(metrics.get(name), dict) else None
                                 for name in ("before", "probe")}}
    gains = metrics.get("gains") if isinstance(metrics.get("gains"), dict) else {}
    tables = []
    for direction, title in DIRECTIONS:
        rows = [_row(key, label, higher, direction, blocks, gains) for key, label, higher in TABLE_ROWS
                if key in (after.get(direction) or {})]
        if rows:
            tables.append((title, rows))
    return tables


# ---- galleries ------------------------------------------------------------------------------------------------------
def _thumb(image: str, run_dir: Path) -> str:
    """A small JPEG copy under report_assets/thumbs/, named by a hash of the source path; relative URL."""
    from cliptune.data.images import load_image

    name = hashlib.sha1(image.encode("utf-8", "surrogatepass")).hexdigest()[:20] + ".jpg"
    target = run_dir / THUMB_DIR / name
    if not target.is_file():
        im = load_image(image)
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        target.parent.mkdir(parents=True, exist_ok=True)
        im.convert("RGB").save(target, "JPEG", quality=88)
    return f"{THUMB_DIR}/{name}"


def _load_config(run_dir: Path):
    from cliptune.config import load_config

    return load_config(run_dir / "config.yaml")


def _load_split(cfg, data: "Dataset | str | os.PathLike | None") -> list["Record"]:
    """The evaluation split exactly as training saw it (train/rebuild.py: same reader options, split ratios and
    seed, and data.test_path/val_path when the run was given separate evaluation data)."""
    from cliptune.data.load import load_dataset
    from cliptune.data.records import Dataset
    from cliptune.train.rebuild import is_run_data, load_run_data, run_split

    if isinstance(data, Dataset):
        return run_split(cfg, cfg.eval.split, data)
    if is_run_data(cfg, None if data is None else str(data)):
        return run_split(cfg, cfg.eval.split, load_run_data(cfg))
    d = cfg.data
    return run_split(cfg, cfg.eval.split, load_dataset(data, format=d.format, image_root=d.image_root,
                                                       on_bad_sample=d.on_bad_sample, split_ratios=d.split_ratios,
                                                       seed=d.split_seed))


def _base_model(cfg) -> "DualEncoder":
    """The model the run started from, built as training built it (train/rebuild.py)."""
    from cliptune.train.rebuild import base_model

    return base_model(cfg)


def _choose(records: list["Record"], n_queries: int, max_pool: int) -> tuple[list[int], list["Record"]]:
    """Deterministic query images (seeded sample) and the retrieval pool, which always contains them."""
    rng = random.Random(QUERY_SEED)
    order = sorted(rng.sample(range(len(records)), min(n_queries, len(records))))
    if len(records) <= max_pool:
        return order, records
    chosen = set(order)
    rest = [i for i in range(len(records)) if i not in chosen]
    keep = sorted(order + random.Random(QUERY_SEED + 1).sample(rest, max_pool - len(order)))
    return [keep.index(i) for i in order], [records[i] for i in keep]


def _side(title: str, label: str, model: "DualEncoder", pool: list["Record"], truth: list[int], texts: list[str],
          run_dir: Path, batch_size: int, progress: bool) -> list[GallerySide]:
    import torch

    from cliptune.eval.retrieval import topk_chunked
    from cliptune.inference.embed import encode_images, encode_texts

    was_training = model.training
    with torch.random.fork_rng(devices=[]):  # a model handed over by the trainer keeps its mode and RNG stream
        image_emb = encode_images(model, pool, batch_size=batch_size, progress=progress)
        text_emb = encode_texts(model, texts, progress=progress)
    model.train(was_training)
    scores, index = topk_chunked(text_emb, image_emb, TOP_K)
    sides = []
    for q, gt in enumerate(truth):
        row = text_emb[q] @ image_emb.T
        # rank as the list orders it: higher score first, ties by lower index (topk_chunked's convention)
        rank = 1 + int((row > row[gt]).sum()) + int(((row == row[gt]) & (torch.arange(len(pool)) < gt)).sum())
        hits = [Hit(_thumb(pool[int(i)].image, run_dir), pool[int(i)].captions[0] if pool[int(i)].captions else "",
                    float(s), int(i) == gt) for s, i in zip(scores[q], index[q])]
        sides.append(GallerySide(title, label, hits, rank))
    return sides


def build_gallery(run_dir: Path, cfg, model: "DualEncoder | None", data, n_queries: int,
                  progress: bool = False, max_pool: int = MAX_POOL_IMAGES) -> Gallery:
    """Top-5 retrievals for sample captions of the evaluation split, before and after; never raises for missing
    data or models, it records why in `Gallery.notes`."""
    gallery = Gallery(split=cfg.eval.split)
    try:
        records = _load_split(cfg, data)
    except Exception as err:  # noqa: BLE001 - the report must render whatever went wrong
        gallery.notes.append(f"Galleries skipped: the data could not be loaded ({_reason(err)}).")
        return gallery
    records = [r for r in records if r.captions]
    if not records:
        gallery.notes.append("Galleries skipped: the evaluation split has no captions.")
        return gallery
    picks, pool = _choose(records, n_queries, max_pool)
    gallery.pool, gallery.split_size = len(pool), len(records)
    texts = [pool[i].captions[0] for i in picks]

    loaders = (("before", cfg.model.spec, lambda: _base_model(cfg), f"the base model {cfg.model.spec!r}"),
               ("after", f"{run_dir.name}/model", lambda: model if model is not None else _load_after(run_dir),
                "the fine-tuned model"))
    per_side: dict[str, list[GallerySide]] = {}
    for title, label, load, what in loaders:
        try:
            encoder = load()
            per_side[title] = _side(title, label, encoder, pool, picks, texts, run_dir, cfg.eval.batch_size,
                                    progress)
        except Exception as err:  # noqa: BLE001
            log.warning("report gallery: %s failed: %s", title, err)
            gallery.notes.append(f"No “{title}” results: {what} could not be used ({_reason(err)}).")
            per_side[title] = [GallerySide(title, label, note="unavailable") for _ in picks]
    if all(side.note for sides in per_side.values() for side in sides):
        return gallery
    for q, i in enumerate(picks):
        try:
            truth_thumb = _thumb(pool[i].image, run_dir)
        except Exception:  # noqa: BLE001
            truth_thumb = ""
        gallery.queries.append(GalleryQuery(texts[q], truth_thumb, [per_side["before"][q], per_side["after"][q]]))
    return gallery


def _load_after(run_dir: Path) -> "DualEncoder":
    from cliptune.models.registry import load_model

    return load_model(run_dir / "model")


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---- page -----------------------------------------------------------------------------------------------------------
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if not isinstance(v, (int, float)) else f"{v * 100:.1f}%"
    return env


def _summary(metrics: dict) -> list[tuple[str, str]]:
    facts = []
    train = metrics.get("train") if isinstance(metrics.get("train"), dict) else {}
    if "steps" in train:
        facts.append(("steps", str(train["steps"])))
    if isinstance(train.get("wall_s"), (int, float)):
        minutes, seconds = divmod(train["wall_s"], 60)
        facts.append(("training time", f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"))
    if train.get("best_step") is not None:
        facts.append(("best step", str(train["best_step"])))
    if train.get("stopped_early"):
        facts.append(("stopped early", "yes"))
    for key, label in (("n_images", "test images"), ("n_texts", "test captions"),
                       ("skipped_samples", "skipped samples")):
        if isinstance(metrics.get(key), int) and (key != "skipped_samples" or metrics[key]):
            facts.append((label, str(metrics[key])))
    return facts


def _headline(metrics: dict) -> dict | None:
    """Mean R@1 over both directions, before → after: the one number a reader looks for first."""
    after, before = metrics.get("after"), metrics.get("before")
    if not isinstance(after, dict):
        return None

    def mean_r1(block: dict) -> float | None:
        values = [block.get(d, {}).get("R@1") for d, _ in DIRECTIONS]
        return sum(values) / len(values) if all(isinstance(v, (int, float)) for v in values) else None

    a = mean_r1(after)
    b = mean_r1(before) if isinstance(before, dict) else None
    if a is None:
        return None
    delta, trend = _change(b, a, True) if b is not None else (None, "same")
    return {"after": a, "before": b, "delta": delta, "trend": trend}


def write_report(run_dir: str | os.PathLike, model: "DualEncoder | None" = None,
                 data: "Dataset | str | os.PathLike | None" = None, n_queries: int = 8, *,
                 galleries: bool = True, progress: bool = False) -> Path:
    """Write `run_dir/report.html` (+ `plots/*.png`, `report_assets/`) and return its path.

    `model` is the fine-tuned model if already in memory (else `run_dir/model` is loaded); `data` is the loaded
    Dataset or a data spec (else the config's `data.path` is read again). Galleries show `n_queries` captions.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    if not config_file.is_file() and not metrics_file.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no config.yaml or metrics.json)")

    run_data = RunData.load(run_dir)
    metrics = run_data.metrics
    notes: list[str] = []
    if not metrics:
        notes.append("metrics.json is missing or unreadable: the run has not finished its final evaluation.")
    plots: list[PlotFile] = make_plots(run_dir, run_data)
    n_logged = len(run_data.train_series("loss")[0])
    plots_note = None if plots else (
        "No training history to plot (history.jsonl is missing or empty)." if not run_data.history else
        f"Only {n_logged} training step(s) logged: curves need at least 2 (lower train.log_every).")

    config_text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    cfg, gallery = None, None
    try:
        cfg = _load_config(run_dir)
    except Exception as err:  # noqa: BLE001
        notes.append(f"config.yaml could not be read ({_reason(err)}).")
    shutil.rmtree(run_dir / THUMB_DIR, ignore_errors=True)  # thumbnails of an earlier report
    match = match_view(metrics)
    if match is not None and galleries and cfg is not None:
        add_match_galleries(match, run_dir, cfg, _thumb, progress=progress)
    elif galleries and n_queries > 0 and cfg is not None:
        gallery = build_gallery(run_dir, cfg, model, data, n_queries, progress=progress)
    elif galleries and n_queries > 0:
        gallery = Gallery(notes=["Galleries skipped: they need config.yaml to find the data and the base model."])

    page = _environment().get_template("report.html.j2").render(
        title=f"cliptune report: {run_dir.resolve().name}",
        run_name=run_dir.resolve().name,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
        model_spec=(cfg.model.spec if cfg else metrics.get("model", "?")),
        data_spec=(cfg.data.path if cfg else metrics.get("data", "?")),
        split=(cfg.eval.split if cfg else metrics.get("split", "test")),
        loss=(cfg.loss.type if cfg else None),
        facts=_summary(metrics),
        headline=_headline(metrics),
        tables=metric_tables(metrics),
        match=match,
        has_before=isinstance(metrics.get("before"), dict),
        has_probe=isinstance(metrics.get("probe"), dict),
        plots=[{"title": p.title, "src": f"plots/{p.path.name}"} for p in plots],
        plots_note=plots_note,
        gallery=gallery,
        galleries_requested=galleries and match is None,
        top_k=TOP_K,
        notes=notes,
        config_text=config_text,
        files=[name for name in ("metrics.json", "history.csv", "history.jsonl", "config.yaml")
               if (run_dir / name).is_file()],
    )
    target = run_dir / REPORT_FILE
    tmp = target.with_name(f".{REPORT_FILE}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


__all__ = ["REPORT_FILE", "build_gallery", "metric_tables", "write_report"]
