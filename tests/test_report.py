"""report.html of a real (tiny) run: metrics table, plots as valid PNGs, before/after galleries, and a page that
still renders when the data or the base model is gone."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cli_inprocess import run_cli
from report_run import trained_run, written_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> str:
    path = written_report(tmp_path_factory, n_queries=4)
    assert path == run_dir / "report.html"
    return path.read_text(encoding="utf-8")


def _copy_run(run_dir: Path, dst: Path, **config_changes) -> Path:
    """A copy of the run (without checkpoints) with config.yaml sections changed, e.g. data={"path": ...}."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "report*", "plots"))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    for section, values in config_changes.items():
        cfg[section].update(values)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def test_report_has_config_table_and_point_change(report, run_dir):
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "<table" in report and "text → image" in report and "image → text" in report
    for metric in ("R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR", "median rank"):
        assert f"<td>{metric}</td>" in report
    before, after = metrics["before"]["t2i"]["R@1"], metrics["after"]["t2i"]["R@1"]
    assert f"{before:.4f}" in report and f"{after:.4f}" in report
    if after != before:  # absolute points, never a percentage of the baseline
        assert f"{(after - before) * 100:+.1f} pts" in report
    assert not re.search(r"[+-]\d+(\.\d)?%", report)
    assert "config.yaml (fully resolved)" in report and "spec: tiny-clip" in report
    assert "<details>" in report and "<details open" not in report  # the config starts collapsed
    assert "<script" not in report  # a static page


def test_plots_exist_and_are_valid_pngs(report, run_dir):
    srcs = re.findall(r'<img src="(plots/[^"]+)"', report)
    assert {Path(s).stem for s in srcs} == {"loss", "lr", "logit_scale", "val_recall"}
    for src in srcs:
        path = run_dir / src
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
            assert len(np.unique(pixels, axis=0)) > 10  # something was drawn


def test_gallery_has_before_and_after_with_ground_truth(report, run_dir):
    assert report.count('class="query"') == 4
    assert report.count('class="side before"') == 4 and report.count('class="side after"') == 4
    assert "truth at rank" in report and "ground truth" in report
    for src in re.findall(r'<img src="(report_assets/[^"]+)"', report):
        assert (run_dir / src).is_file(), src  # every thumbnail is a relative path that resolves


def test_gallery_marks_truth_exactly_where_it_ranks(run_dir, report):
    import html

    from cliptune.config import load_config
    from cliptune.models.registry import load_model
    from cliptune.report.html import TOP_K, build_gallery

    from cliptune.data.load import load_dataset

    cfg = load_config(run_dir / "config.yaml")
    d = cfg.data
    data = load_dataset(d.path, split_ratios=d.split_ratios, seed=d.split_seed)
    model = load_model(run_dir / "model").train()
    gallery = build_gallery(run_dir, cfg, model, data, n_queries=4)  # what the trainer hands over: objects in memory
    assert model.training  # the caller's model comes back in the mode it was in
    assert not gallery.notes and len(gallery.queries) == 4
    shown = [html.unescape(t) for t in re.findall(r"<h3>“(.*?)”</h3>", report)]
    assert [q.text for q in gallery.queries] == shown  # the same captions every time
    for query in gallery.queries:
        assert [s.title for s in query.sides] == ["before", "after"]
        for side in query.sides:
            assert len(side.hits) == TOP_K and side.truth_rank >= 1
            marked = [i for i, hit in enumerate(side.hits) if hit.is_truth]
            assert marked == ([side.truth_rank - 1] if side.truth_rank <= TOP_K else [])
            scores = [hit.score for hit in side.hits]
            assert scores == sorted(scores, reverse=True)


def test_report_renders_without_data_or_base_model(run_dir, tmp_path):
    from cliptune.report.html import write_report

    no_data = _copy_run(run_dir, tmp_path / "no-data", data={"path": str(tmp_path / "moved.csv")})
    page = write_report(no_data).read_text()
    assert "the data could not be loaded" in page and "moved.csv" in page
    assert "<td>R@1</td>" in page and 'class="query"' not in page

    no_base = _copy_run(run_dir, tmp_path / "no-base", model={"spec": "no-such-model"})
    page = write_report(no_base, n_queries=2).read_text()
    assert "base model" in page and "no-such-model" in page
    assert page.count('class="side after"') == 2 and "unavailable" in page


def test_report_command_no_galleries(run_dir, tmp_path, monkeypatch, capsys):
    copy = _copy_run(run_dir, tmp_path / "copy")
    code, _, err = run_cli(monkeypatch, capsys, "report", copy, "--no-galleries", "-q")
    assert code == 0, err
    page = (copy / "report.html").read_text()
    assert 'id="galleries"' not in page and "<td>R@1</td>" in page and (copy / "plots" / "loss.png").is_file()
    code, _, err = run_cli(monkeypatch, capsys, "report", tmp_path / "nowhere")
    assert code == 2 and "nowhere" in err


def test_match_plots_are_driven_by_data(tmp_path):
    from cliptune.report.plots import RunData, make_plots, match_confusion_matrix, match_pr_curve

    assert match_pr_curve(RunData()) is None and match_confusion_matrix(RunData()) is None
    match = {"pr_curve": {"precision": [1.0, 0.9, 0.75, 0.5], "recall": [0.0, 0.4, 0.8, 1.0]},
             "threshold": 0.3, "precision": 0.75, "recall": 0.8, "average_precision": 0.81,
             "confusion_matrix": [[40, 10], [5, 45]]}
    files = make_plots(tmp_path, RunData(metrics={"match": match}))
    assert [f.name for f in files] == ["match_pr", "match_confusion"]
    for f in files:
        assert f.path.read_bytes()[:8] == PNG_MAGIC
    # the plots directory follows the data: without the block the stale files go
    assert make_plots(tmp_path, RunData()) == [] and not (tmp_path / "plots" / "match_pr.png").exists()
    # per-split blocks ({"threshold", "val": {...}, "test": {...}}) plot the test split
    nested = RunData(metrics={"match": {"threshold": 0.3, "val": {}, "test": match}})
    assert match_pr_curve(nested) is not None and match_confusion_matrix(nested) is not None


def test_printed_tables_show_absolute_point_changes():
    from rich.console import Console

    from cliptune.report.table import comparison_table, match_table

    block = {"R@1": 0.001, "R@5": 0.01, "R@10": 0.02, "mAP": 0.005}
    after = {"t2i": {**block, "R@1": 0.168}, "i2t": block}
    console = Console(record=True, width=200)
    console.print(comparison_table(after, {"t2i": block, "i2t": block}))
    text = console.export_text()
    assert "+16.7 pts" in text and "%" not in text
    m = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "accuracy": 0.6, "roc_auc": None, "threshold": 0.2,
         "n_pairs": 10}
    console.print(match_table({"match": {**m, "recall": 0.75}}, {"match": m}))
    text = console.export_text()
    assert "+50.0 pts" in text and "threshold 0.2000" in text and "n/a" in text
