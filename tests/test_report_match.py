"""A match run's report: its own section (threshold, P/R/F1/AUC table for validation and test, confusion matrix,
galleries of false matches and misses), the match plots, no retrieval table or frozen logit-scale curve, and a
Chromium screenshot of it."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from test_match_task import make_match_csv
from test_report_browser import screenshot


@pytest.fixture(scope="module")
def match_run(tmp_path_factory):
    from cliptune.config import load_config
    from cliptune.train.run import train_run
    from cliptune.train.rundir import RunDir

    root = tmp_path_factory.mktemp("match-report")
    data = make_match_csv(root / "data", n_colors=8)
    cfg = load_config(None, ["model.spec=tiny-clip", "train.task=match", "train.epochs=2", "train.log_every=1",
                             "train.batch_size=8", "train.warmup_steps=1", "data.split_ratios=[0.5,0.25,0.25]",
                             f"data.path={data}", f"train.output_dir={root / 'runs'}", "train.name=m"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=False)
    from cliptune.report.html import write_report

    write_report(run.path, progress=False)  # as `cliptune train` does after training
    return run.path


def test_match_report_has_its_own_sections(match_run):
    report = (match_run / "report.html").read_text()
    metrics = json.loads((match_run / "metrics.json").read_text())
    assert 'id="match"' in report and "No final metrics" not in report and "text → image" not in report
    assert f"{metrics['threshold']:.4f}" in report and "tuned on the validation pairs for <b>f1</b>" in report
    table = report[report.index('id="match-table"'):report.index("</table>", report.index('id="match-table"'))]
    for split in ("val", "test"):
        for key in ("precision", "recall", "f1", "roc_auc"):
            value = metrics[split]["match"][key]
            assert (f"{value:.4f}" if value is not None else "–") in table, (split, key)
    (tn, fp), (fn, tp) = metrics["test"]["match"]["confusion_matrix"]
    assert re.search(rf"<td>{fp} <span class=\"meta\">false matches", report)
    assert re.search(rf"<td>{fn} <span class=\"meta\">misses", report)
    n_false = len(re.findall(r'<img src="report_assets/thumbs/[^"]+"', report[report.index('id="false-matches"'):
                                                                               report.index('id="misses"')]))
    n_missed = len(re.findall(r'<img src="report_assets/thumbs/[^"]+"', report[report.index('id="misses"'):]))
    assert n_false == min(fp, 6) and n_missed == min(fn, 6)  # the gallery shows the errors the matrix counts
    plots = {m for m in re.findall(r'<img src="plots/([^"]+)\.png"', report)}
    assert {"match_pr", "match_confusion"} <= plots and "logit_scale" not in plots  # the scale is frozen
    assert "<details>" in report and "<details open" not in report


def test_match_report_screenshot(match_run, tmp_path):
    png = tmp_path / "match-report.png"
    result = screenshot(match_run / "report.html", png, tmp_path / "profile")
    assert png.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10 and pixels[:700].std() > 5  # the header and the match table at the top
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.002  # plots and thumbnails drawn, not only text
