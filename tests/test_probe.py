"""The probe (heads re-fitted on frozen towers) and the three-way proof in metrics.json: before / probe / after with
paired bootstrap intervals of the gains."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_shapes_csv

from cliptune.config import load_config
from cliptune.data.load import load_dataset
from cliptune.inference.evaluate import evaluate_records
from cliptune.train import probe as probe_mod
from cliptune.train.probe import fit_probe, fresh_model
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

BASE = {
    "model": {"spec": "tiny-clip"},
    "train": {"epochs": 3, "batch_size": 8, "lr": 2e-3, "warmup_steps": 1, "log_every": 50, "seed": 0},
    "data": {"split_ratios": [0.6, 0.2, 0.2]},
    "eval": {"report": False},
}
BLOCK_METRICS = ("R@1", "R@5", "R@10", "mAP")


def _cfg(tmp_path, data_path, name="run", *overrides):
    return load_config(None, [f"data.path={data_path}", f"train.output_dir={tmp_path / 'runs'}",
                              f"train.name={name}", *overrides], base=BASE)


def _data(cfg):
    return load_dataset(cfg.data.path, split_ratios=cfg.data.split_ratios, seed=cfg.data.split_seed)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("probe-run")
    cfg = _cfg(tmp_path, make_shapes_csv(tmp_path / "shapes"))
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    result = train_run(cfg, run, progress=False)
    return cfg, result, json.loads(run.metrics_file.read_text())


def test_probe_block_with_settings_and_finite_metrics(finished_run):
    cfg, result, metrics = finished_run
    probe = metrics["probe"]
    for direction in ("t2i", "i2t"):
        for key in (*BLOCK_METRICS, "NDCG@10", "MRR"):
            assert 0.0 <= probe[direction][key] <= 1.0
    assert probe["split"] == metrics["after"]["split"] and probe["n_images"] == metrics["after"]["n_images"]
    settings = probe["settings"]
    assert settings["epochs"] == 20 and settings["batch_size"] == cfg.train.batch_size
    assert settings["lr"] == 1e-3 and settings["seed"] == cfg.train.seed  # head_lr unset → 1e-3
    assert settings["selection_metric"] == cfg.train.early_stop_metric and settings["selection_split"] == "val"
    assert probe["wall_s"] > 0 and len(probe["selection"]["val_curve"]) == settings["epochs"] + 1
    assert probe["features"]["image"] and probe["features"]["text"]


def test_gains_agree_with_the_point_metrics(finished_run):
    _, _, metrics = finished_run
    gains = metrics["gains"]
    assert set(gains) == {"after-probe", "after-before", "probe-before"}
    for key, (model, baseline) in {"after-probe": ("after", "probe"), "after-before": ("after", "before"),
                                   "probe-before": ("probe", "before")}.items():
        for direction in ("t2i", "i2t"):
            for m in BLOCK_METRICS:
                g = gains[key][direction][m]
                expected = metrics[model][direction][m] - metrics[baseline][direction][m]
                assert g["delta"] == pytest.approx(expected, abs=2e-6), (key, direction, m)
                assert g["low"] <= g["delta"] + 1e-9 and g["delta"] <= g["high"] + 1e-9
                assert g["level"] == 0.95 and g["n_queries"] > 0
    assert gains["after-probe"]["t2i"]["R@1"]["n_queries"] == metrics["n_texts"]


def test_probe_off_omits_it(tmp_path, shapes_csv):
    cfg = _cfg(tmp_path, shapes_csv, "noprobe", "eval.probe=false", "train.epochs=1")
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=False)
    metrics = json.loads(run.metrics_file.read_text())
    assert "probe" not in metrics and "before" in metrics
    assert set(metrics["gains"]) == {"after-before"}


def test_probe_metrics_equal_a_full_forward_of_its_heads_and_towers_are_untouched(tmp_path, shapes_csv):
    cfg = _cfg(tmp_path, shapes_csv)
    data = _data(cfg)
    loaded, _ = fresh_model(cfg, torch.device("cpu"))
    result = fit_probe(cfg, data, epochs=6)
    # the towers' trunks are exactly as loaded; only heads and the logit scale moved
    heads = {id(t) for t in probe_mod.head_tensors(result.model)}
    moved = []
    for (name, before), after in zip(loaded.state_dict().items(), result.model.state_dict().values()):
        if not torch.equal(before, after):
            moved.append(name)
    assert moved, "the probe fitted nothing"
    head_names = {n for n, t in list(result.model.named_parameters()) + list(result.model.named_buffers())
                  if id(t) in heads}
    assert set(moved) <= head_names, set(moved) - head_names
    # an independent evaluation: the model's own full forward on the test images and captions
    test = data.split(cfg.data.test_split)
    independent = evaluate_records(result.model, test, progress=False)
    for direction in ("t2i", "i2t"):
        for key in (*BLOCK_METRICS, "MRR"):
            assert result.test.metrics[direction][key] == pytest.approx(independent[direction][key], abs=1e-6)


def test_probe_is_reproducible(tmp_path, shapes_csv):
    cfg = _cfg(tmp_path, shapes_csv)
    data = _data(cfg)
    a, b = fit_probe(cfg, data, epochs=3), fit_probe(cfg, data, epochs=3)
    assert a.test.metrics == b.test.metrics and a.val_curve == b.val_curve


def test_probe_selects_on_validation_never_on_test(tmp_path, shapes_csv, monkeypatch):
    """Validation and test have different sizes here: every selection evaluation must be of the validation split,
    and the chosen epoch is the best (latest on ties) of the validation curve."""
    cfg = _cfg(tmp_path, shapes_csv, "sel", "data.split_ratios=[0.5,0.2,0.3]")
    data = _data(cfg)
    n_val, n_test = len(data.split("val")), len(data.split("test"))
    assert n_val != n_test
    seen = []
    real = probe_mod.retrieval_metrics

    def spy(image_emb, text_emb, text_to_image, **kw):
        seen.append(image_emb.shape[0])
        return real(image_emb, text_emb, text_to_image, **kw)

    monkeypatch.setattr(probe_mod, "retrieval_metrics", spy)
    result = fit_probe(cfg, data, epochs=4)
    assert seen == [n_val] * 5
    curve = result.val_curve
    best = max(curve)
    assert result.best_epoch == max(i for i, v in enumerate(curve) if v == best)
    assert result.test.metrics["n_images"] == n_test


def _text(table, width: int) -> str:
    from rich.console import Console

    console = Console(record=True, width=width, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


def test_table_three_way_fits_80_columns_and_two_way_without_probe(finished_run):
    from cliptune.report.table import results_table

    _, _, m = finished_run
    text = _text(results_table(m["after"], m["before"], "tiny", probe=m["probe"], gains=m["gains"]), 80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80 and "…" not in text
    assert "probe" in text and "after−probe" in text and "after−before" in text
    g = m["gains"]["after-probe"]["i2t"]["mAP"]
    assert f"{g['delta'] * 100:+.1f} [{g['low'] * 100:.1f}, {g['high'] * 100:.1f}]" in text
    assert f"{m['probe']['t2i']['R@1']:.4f}" in text
    old = _text(results_table(m["after"], m["before"], "tiny"), 100)  # an older run: no probe, no gains
    assert "change (points)" in old and "probe" not in old


def test_report_renders_new_and_old_runs(finished_run, tmp_path):
    import shutil

    from cliptune.report.html import write_report

    _, result, m = finished_run
    new = write_report(result.run_dir, galleries=False).read_text(encoding="utf-8")
    assert "<th>probe</th>" in new and "after − probe" in new
    g = m["gains"]["after-before"]["t2i"]["R@1"]
    assert f"[{g['low'] * 100:.1f}, {g['high'] * 100:.1f}]" in new
    assert f"{m['probe']['i2t']['mAP']:.4f}" in new
    old_dir = tmp_path / "old"
    shutil.copytree(result.run_dir, old_dir, ignore=shutil.ignore_patterns("checkpoints", "report*", "plots"))
    old_metrics = {k: v for k, v in m.items() if k not in ("probe", "gains")}
    (old_dir / "metrics.json").write_text(json.dumps(old_metrics))
    old = write_report(old_dir, galleries=False).read_text(encoding="utf-8")
    assert "<th>probe</th>" not in old and "change (points)" in old and "<th>before</th>" in old


def test_resumed_run_reports_only_the_gains_it_has_ranks_for(tmp_path, shapes_csv):
    """A checkpoint keeps before's metrics, not its per-query ranks: after a resume the intervals over `before`
    are left out rather than computed from other scores."""
    cfg = _cfg(tmp_path, shapes_csv, "resumed", "train.epochs=2", "train.stop_at_step=2")
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=False)
    resumed = _cfg(tmp_path, shapes_csv, "resumed", "train.epochs=2")
    train_run(resumed, run, resume=True, progress=False)
    metrics = json.loads(run.metrics_file.read_text())
    assert "before" in metrics and "probe" in metrics and set(metrics["gains"]) == {"after-probe"}
