"""Recipes: the catalog is valid data, the automatic choice follows the situation, the user's settings win over a
recipe, and `cliptune train` prints the plan and a time estimate before it trains (and keeps them in plan.json)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from cli_inprocess import run_cli
from cliptune.config import load_config
from cliptune.errors import UsageError
from cliptune.recipes import all_recipes, get_recipe
from cliptune.recipes.catalog import Recipe
from cliptune.recipes.choose import choose_recipe
from cliptune.recipes.estimate import Splits, Timings, estimate_run, time_probe
from cliptune.recipes.resolve import resolve_config
from cliptune.recipes.situation import Situation, model_family


def test_every_recipe_is_a_valid_config_layer():
    recipes = all_recipes()
    assert {"cpu-fast", "cpu-heads", "cpu-quick", "cpu-top", "gpu-full", "multi-gpu"} <= set(recipes)
    for name, recipe in recipes.items():
        cfg = load_config(None, [], base=recipe.config)  # validates every key and value
        assert cfg.train.early_stop_metric == "mean_mAP", name
        assert recipe.faster is None or recipe.faster in recipes, name


@pytest.mark.parametrize("config", [{"data": {"path": "x.csv"}}, {"train": {"output_dir": "elsewhere"}},
                                    {"model": {"spec": "lite"}}, {"train": {"task": "match"}}])
def test_a_recipe_may_not_set_the_users_settings(config):
    with pytest.raises(ValueError):
        Recipe(name="bad", summary="s", use_when="u", config=config)


@pytest.mark.parametrize("situation, expected", [
    (Situation("cpu", 1, "lite", 3_000), "cpu-fast"),
    (Situation("cpu", 1, "composed", 3_000), "cpu-fast"),
    (Situation("cpu", 1, "pretrained", 3_000), "cpu-top"),
    (Situation("cpu", 1, "lite", 200_000), "cpu-heads"),
    (Situation("cpu", 1, "pretrained", 200_000), "cpu-heads"),
    (Situation("gpu", 1, "lite", 3_000), "gpu-full"),
    (Situation("multi-gpu", 4, "pretrained", 3_000), "multi-gpu"),
])
def test_the_automatic_choice_follows_device_model_and_data_size(situation, expected):
    choice = choose_recipe(situation)
    assert choice.recipe.name == expected
    assert situation.describe() in choice.reason


def test_model_families():
    assert model_family("lite") == model_family("lite:b1") == model_family("lite-random") == "lite"
    assert model_family("hf:/models/clip") == model_family("openclip:ViT-B-32/x.pt") == "pretrained"
    assert model_family("composed:tv:resnet18+hf:/m") == "composed"


def test_settings_win_over_the_recipe(shapes_csv, tmp_path):
    """defaults ← recipe ← config file ← --set."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"lr": 3e-4}}))
    resolved = resolve_config(str(config), [f"data.path={shapes_csv}", "train.epochs=2"], None)
    recipe = get_recipe("cpu-fast").config
    assert resolved.choice.recipe.name == "cpu-fast" and resolved.cfg.model.spec == "lite"
    assert resolved.cfg.train.epochs == 2 and resolved.cfg.train.lr == 3e-4  # --set, then the file
    assert resolved.cfg.train.head_lr == recipe["train"]["head_lr"]  # the recipe, where nothing else says
    assert resolved.cfg.model.freeze == "both"
    plain = resolve_config(None, [f"data.path={shapes_csv}"], "none")
    assert plain.choice is None and plain.cfg.model.freeze == "none"  # the built-in defaults


def test_a_recipe_for_another_model_family_or_task_is_refused(shapes_csv):
    with pytest.raises(UsageError, match="cpu-quick.*lite"):
        resolve_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip"], "cpu-quick")
    with pytest.raises(UsageError, match="unknown recipe"):
        resolve_config(None, [f"data.path={shapes_csv}"], "no-such-recipe")


def _probe_inputs(shapes_csv):
    from cliptune.models.freeze import plan_from_config
    from cliptune.train.rebuild import build_model, load_run_data

    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", "model.freeze=both",
                             "model.unfreeze_last_n=1", "train.batch_size=32"])
    data, model = load_run_data(cfg), build_model(cfg)
    return cfg, data, model, plan_from_config(model, cfg.model)


def test_the_timing_probe_changes_neither_the_model_nor_the_random_stream(shapes_csv):
    cfg, data, model, plan = _probe_inputs(shapes_csv)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    timings = time_probe(cfg, model, plan, data.split("train"), {"image": True, "text": False})
    assert torch.equal(torch.rand(3), expected_draw)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(getattr(timings, f) > 0 for f in ("decode", "image_prefix", "image_suffix", "text_prefix", "step"))


def test_the_estimate_adds_up_and_skips_features_already_cached(shapes_csv):
    cfg, data, _, _ = _probe_inputs(shapes_csv)
    t = Timings(decode=0.01, image_prefix=0.1, image_suffix=0.01, text_prefix=0.001, text_suffix=0.001, step=2.0)
    splits = Splits(data.split("train"), data.split("val"), data.split("test"))
    cached = {"image": True, "text": True}
    cold = estimate_run(cfg, t, splits, steps=10, cached=cached, on_disk=lambda side, records: False)
    warm = estimate_run(cfg, t, splits, steps=10, cached=cached, on_disk=lambda side, records: True)
    n_images = sum(len(s) for s in (splits.train, splits.val, splits.test))
    assert cold.train_s == warm.train_s == 20.0 and warm.features_s == 0.0
    assert cold.features_s >= n_images * (0.01 + 0.1)
    assert cold.total_s == pytest.approx(cold.features_s + cold.train_s + cold.eval_s)
    live = estimate_run(cfg, t, splits, steps=10, cached={"image": False, "text": True},
                        on_disk=lambda side, records: False)
    assert live.eval_s > cold.eval_s  # an uncached tower runs whole at every evaluation


def test_train_prints_the_plan_and_estimate_and_keeps_them(monkeypatch, capsys, shapes_csv, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--data", shapes_csv, "--model", "tiny-clip",
                             "--output-dir", tmp_path, "--name", "r", "--set", "train.epochs=1", "-q")
    assert code == 0, err
    text = out + err
    assert "recipe cpu-top (chosen for CPU, pretrained model" in text and "estimated wall time" in text
    assert "last 1 of 2 blocks train" in text
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["plan"]["recipe"] == "cpu-top" and plan["estimate"]["total_s"] > 0
    saved = load_config(tmp_path / "r" / "config.yaml")
    assert saved.model.freeze == "both" and saved.train.epochs == 1 and saved.train.lr == 1e-5


def test_a_long_cpu_plan_names_the_faster_recipe(monkeypatch, capsys, shapes_csv, tmp_path):
    import cliptune.recipes.announce as announce

    monkeypatch.setattr(announce, "LONG_CPU_RUN_S", 0.0)
    code, out, err = run_cli(monkeypatch, capsys, "train", "--data", shapes_csv, "--model", "tiny-clip",
                             "--recipe", "cpu-top", "--output-dir", tmp_path, "--set", "train.max_steps=1", "-q")
    assert code == 0, err
    assert "--recipe cpu-heads` is the faster choice" in " ".join((out + err).split())


def test_recipes_command_lists_and_shows(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "recipes")
    assert code == 0 and all(name in out for name in all_recipes())
    code, out, _ = run_cli(monkeypatch, capsys, "recipes", "cpu-fast")
    assert code == 0 and yaml.safe_load(out) == get_recipe("cpu-fast").config
    code, _, err = run_cli(monkeypatch, capsys, "recipes", "nope")
    assert code == 2 and "unknown recipe" in err
