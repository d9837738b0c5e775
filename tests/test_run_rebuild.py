"""One module rebuilds what a run trained on (train/rebuild.py); report, wise and eval read the run's own val/test
data through it. Regression tests for two wrong results: report galleries drawn from data.csv's test split after
`--test-data test.csv`, and `wise` choosing α on data.csv's val split after `--val-data val.csv`."""

import csv
import json

from cli_inprocess import run_cli
from cliptune.config import load_config
from cliptune.train.rebuild import load_run_data
from cliptune.train.rundir import RunDir


def _subset(shapes_csv, name, rows):
    """A CSV beside the shapes data with `rows` of it (same images, so paths resolve the same way)."""
    with open(shapes_csv, newline="") as fh:
        records = list(csv.DictReader(fh))
    path = shapes_csv.parent / name
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption"])
        writer.writeheader()
        writer.writerows(records[i] for i in rows)
    return path


def _cfg(tmp_path, shapes_csv, name, *sets):
    return load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                              f"train.name={name}", *sets])


def test_run_data_uses_the_separate_val_and_test_sets(tmp_path, shapes_csv):
    test_csv = _subset(shapes_csv, "test.csv", range(12))
    val_csv = _subset(shapes_csv, "val.csv", range(12, 17))
    data = load_run_data(_cfg(tmp_path, shapes_csv, "x", f"data.test_path={test_csv}", f"data.val_path={val_csv}"))
    assert len(data.split("test")) == 12 and len(data.split("val")) == 5
    own = load_run_data(_cfg(tmp_path, shapes_csv, "y"))
    assert len(own.split("test")) != 12  # the regression below would not be caught otherwise


def test_report_gallery_draws_from_the_runs_test_data(tmp_path, shapes_csv):
    from cliptune.report.html import build_gallery

    test_csv = _subset(shapes_csv, "test.csv", range(12))
    cfg = _cfg(tmp_path, shapes_csv, "gallery", f"data.test_path={test_csv}")
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    run.config_file.write_text(cfg.to_yaml())
    gallery = build_gallery(run.path, cfg, None, None, n_queries=2)
    assert gallery.split_size == 12, gallery.notes


def test_wise_chooses_alpha_on_the_runs_val_data(tmp_path, shapes_csv, monkeypatch, capsys):
    val_csv = _subset(shapes_csv, "val.csv", range(12, 17))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", shapes_csv, "--val-data", val_csv, "--model",
                           "tiny-clip", "--name", "wise", "--output-dir", tmp_path, "--set", "train.max_steps=2",
                           "--set", "train.batch_size=8", "--set", "eval.report=false", "-q")
    assert code == 0, err[-2000:]
    code, _, err = run_cli(monkeypatch, capsys, "wise", "--tuned", tmp_path / "wise", "--alphas", "0,1", "-q")
    assert code == 0, err[-2000:]
    payload = json.loads((tmp_path / "wise" / "wise" / "wise.json").read_text())
    assert payload["n_target_records"] == 5
    assert payload["target_data"] == str(val_csv)


def test_index_of_a_runs_own_data_reads_its_test_data(tmp_path, shapes_csv, monkeypatch, capsys):
    """`cliptune index --model runs/X --data <its data> --split test` indexes the test set the run was evaluated
    on (its --test-data), not the training file's own test split."""
    test_csv = _subset(shapes_csv, "test.csv", range(12))
    cfg = _cfg(tmp_path, shapes_csv, "indexed", f"data.test_path={test_csv}")
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    run.config_file.write_text(cfg.to_yaml())
    (run.path / "model").mkdir()
    from cliptune.models.registry import load_model

    load_model("tiny-clip").save(run.path / "model")
    code, out, err = run_cli(monkeypatch, capsys, "index", "--model", run.path, "--data", shapes_csv, "--split",
                             "test", "--out", tmp_path / "idx", "-q")
    assert code == 0, err
    from cliptune.search.index import open_index

    assert len(open_index(tmp_path / "idx").items) == 12
