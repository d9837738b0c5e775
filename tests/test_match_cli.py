"""`train.task=match` from the CLI exactly as the README shows it, then `cliptune match` on its output; the config
rule that makes `train.task=match` pick its loss and early-stop metric; Platt calibration; the chance warning."""

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from cli_inprocess import run_cli
from cliptune.config import load_config
from cliptune.errors import UsageError
from cliptune.eval.calibration import fit_platt
from cliptune.train.match import at_chance, chance_warning
from test_match_task import make_match_csv

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(pattern: str) -> list[str]:
    """The README's `cliptune ...` line containing `pattern`, split like a shell would (comment dropped)."""
    for line in README.read_text().splitlines():
        if line.startswith("cliptune ") and pattern in line:
            return shlex.split(line.split("  #")[0])[1:]
    raise AssertionError(f"no README command with {pattern!r}")


def test_match_task_config_rule():
    cfg = load_config(overrides=["train.task=match"])
    assert cfg.loss.type == "match" and cfg.train.early_stop_metric == "match/f1"
    cfg = load_config(overrides=["train.task=match", "train.match_threshold_metric=accuracy"])
    assert cfg.train.early_stop_metric == "match/accuracy"
    cfg = load_config(overrides=["train.task=match", "train.early_stop_metric=match/balanced_accuracy",
                                 "loss.type=match", "loss.params.head=classifier"])
    assert cfg.train.early_stop_metric == "match/balanced_accuracy" and cfg.loss.params == {"head": "classifier"}
    assert load_config().loss.type == "infonce" and load_config().train.early_stop_metric == "mean_R@10"
    for bad, words in ((["train.task=match", "loss.type=infonce"], "loss.type"),
                       (["train.task=match", "train.early_stop_metric=mean_R@10"], "early_stop_metric"),
                       (["loss.type=match"], "train.task=match"),
                       (["train.early_stop_metric=match/f1"], "train.task=match")):
        with pytest.raises(UsageError, match=re.escape(words)):
            load_config(overrides=bad)


def test_platt_matches_logistic_regression_and_chance_rule():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.normal(0.1 + 0.3 * y, 0.1)
    platt = fit_platt(s, y)
    # sklearn with Platt's soft targets t: each pair once as a match (weight t), once as not (weight 1 - t)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    lr = LogisticRegression(C=1e9, tol=1e-10, max_iter=10_000).fit(
        np.r_[s, s][:, None], np.r_[np.ones_like(y), np.zeros_like(y)], sample_weight=np.r_[t, 1 - t])
    np.testing.assert_allclose(platt.probability(s), lr.predict_proba(s[:, None])[:, 1], atol=1e-4)
    assert fit_platt(s, np.ones_like(y)) is None
    good = {"roc_auc": 0.9, "n_pairs": 100, "n_matches": 50}
    assert not at_chance(good) and chance_warning(good, "score") is None
    weak = {"roc_auc": 0.53, "n_pairs": 100, "n_matches": 50}  # 2 SE of the null is ~0.116 here
    assert at_chance(weak)
    assert "loss.params.head=score" in chance_warning(weak, "classifier")


def test_readme_match_command_end_to_end(tmp_path, monkeypatch, capsys):
    data = make_match_csv(tmp_path / "data", n_colors=4)
    monkeypatch.chdir(tmp_path)
    args = readme_command("train.task=match")
    assert "--model" in args and "--data" in args
    args[args.index("--model") + 1] = "tiny-clip"
    args[args.index("--data") + 1] = str(data)
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    run = tmp_path / "runs" / args[args.index("--name") + 1]
    meta = json.loads((run / "model" / "match.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["threshold_metric"] == "f1" and isinstance(meta["threshold"], float)
    assert metrics["threshold"] == meta["threshold"] and metrics["threshold_metric"] == "f1"
    for split in ("val", "test"):
        m = metrics[split]["match"]
        assert {"precision", "recall", "f1", "roc_auc", "confusion_matrix"} <= set(m)
    assert "precision" in out and "f1" in out and "threshold" in out  # the match table, not the retrieval one
    assert ("warnings" in metrics) == at_chance(metrics["val"]["match"])  # a head at chance is reported
    if at_chance(metrics["val"]["match"]):
        flat = " ".join(err.split())
        assert "at chance on validation" in flat and "train longer" in flat
    config = (run / "config.yaml").read_text()
    assert "type: match" in config and "early_stop_metric: match/f1" in config

    # `cliptune match` on the same labelled CSV: prediction columns, confidence, label + correctness, summary
    preds = tmp_path / "preds.csv"
    code, _, err = run_cli(monkeypatch, capsys, "match", "--model", run, "--csv", data, "--output", preds, "-q")
    assert code == 0, err
    rows = list(csv.DictReader(open(preds)))
    assert list(rows[0]) == ["image_path", "text", "similarity_score", "threshold", "is_match", "prediction",
                             "confidence", "label", "correct"]
    y = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["is_match"]) for r in rows])
    score = np.array([float(r["similarity_score"]) for r in rows])
    assert all(int(r["correct"]) == int(r["label"] == r["is_match"]) for r in rows)
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    summary = re.search(r"precision ([\d.]+), recall ([\d.]+), F1 ([\d.]+), ROC AUC ([\d.]+)", err)
    assert summary, err
    p, r, f1, auc = map(float, summary.groups())
    assert p == pytest.approx(precision_score(y, pred, zero_division=0), abs=1e-3)
    assert r == pytest.approx(recall_score(y, pred), abs=1e-3)
    assert f1 == pytest.approx(f1_score(y, pred), abs=1e-3)
    assert auc == pytest.approx(roc_auc_score(y, score), abs=2e-3)
    # the confusion matrix layout [[tn, fp], [fn, tp]] is sklearn's
    from cliptune.eval.matching import match_metrics

    threshold = float(rows[0]["threshold"])
    assert match_metrics(score, y, threshold)["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    test = metrics["test"]["match"]
    assert np.array(test["confusion_matrix"]).sum() == test["n_pairs"]
