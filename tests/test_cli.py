"""The command line end to end: exit codes (0 ok, 2 bad data/usage) and messages that name the file and row."""

import csv
import json
import subprocess
import sys

import pytest


def cliptune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cliptune", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_help_is_fast_and_lists_commands():
    out = cliptune("--help")
    assert out.returncode == 0
    for command in ("train", "eval", "demo", "data"):
        assert command in out.stdout


def test_eval_writes_metrics_json(shapes_csv, tmp_path):
    out_file = tmp_path / "m.json"
    res = cliptune("eval", "--model", "tiny-clip", "--data", shapes_csv, "--split", "test", "--out", out_file, "-q")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(out_file.read_text())
    assert metrics["split"] == "test" and metrics["model"] == "tiny-clip"
    assert set(metrics["t2i"]) >= {"R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR", "median_rank"}
    assert "R@10" in res.stdout


def test_bad_row_exits_2_naming_file_and_row(shapes_csv, tmp_path):
    rows = list(csv.DictReader(open(shapes_csv)))
    rows[3]["caption"] = "   "
    rows[5]["image_path"] = "does-not-exist.png"
    bad = shapes_csv.parent / "bad.csv"
    with open(bad, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    res = cliptune("eval", "--model", "tiny-clip", "--data", bad, "-q")
    assert res.returncode == 2
    assert "bad.csv" in res.stderr and "row 4" in res.stderr

    out_file = tmp_path / "m.json"
    res = cliptune("eval", "--model", "tiny-clip", "--data", bad, "--on-bad-sample", "skip", "--split", "all",
                   "--out", out_file, "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads(out_file.read_text())["skipped_samples"] == 2


def test_missing_column_and_unknown_model_exit_2(tmp_path, shapes_csv):
    bad = tmp_path / "nocol.csv"
    bad.write_text("path,caption\na.png,hello\n")
    res = cliptune("eval", "--model", "tiny-clip", "--data", bad)
    assert res.returncode == 2 and "nocol.csv" in res.stderr and "image_path" in res.stderr
    res = cliptune("eval", "--model", "hf:openai/clip-vit-base-patch32", "--data", shapes_csv)
    assert res.returncode == 2 and "hub" in res.stderr.lower()


def test_train_via_cli_and_resume_errors(shapes_csv, tmp_path):
    res = cliptune("train", "--data", shapes_csv, "--model", "tiny-clip", "--output-dir", tmp_path, "--name", "r",
                   "--set", "train.epochs=2", "--set", "train.batch_size=16", "-q")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "metrics.json").is_file()
    assert "R@1" in res.stdout and "before" in res.stdout
    # evaluating the run directory later uses the run's own split and reproduces its test metrics
    again = tmp_path / "again.json"
    res = cliptune("eval", "--model", tmp_path / "r", "--data", shapes_csv, "--split", "test", "--out", again, "-q")
    assert res.returncode == 0, res.stderr
    trained = json.loads((tmp_path / "r" / "metrics.json").read_text())
    evaluated = json.loads(again.read_text())
    assert evaluated["n_images"] == trained["n_images"]
    assert evaluated["t2i"]["mAP"] == pytest.approx(trained["t2i"]["mAP"], abs=1e-6)
    res = cliptune("train", "--resume", tmp_path / "nope")
    assert res.returncode == 2 and "config.yaml" in res.stderr
    res = cliptune("train", "--data", shapes_csv, "--set", "train.lr=fast", "--output-dir", tmp_path)
    assert res.returncode == 2 and "train.lr" in res.stderr
