"""Start or continue a search: every setting is checked (budget, metric, base config, data splits) before the tune
directory is created; a resume reads it all back from tune.json."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cliptune.config import Config, load_config
from cliptune.data.records import Dataset
from cliptune.errors import UsageError
from cliptune.tune.budget import parse_budget
from cliptune.tune.settings import DEFAULT_METRIC, SETTINGS_FILE, TuneSettings
from cliptune.tune.space import ModelFacts, SearchSpace, default_space, model_facts


def check_splits(cfg: Config, data: Dataset) -> None:
    """The validation split (searched on) and the test split (the winner's one evaluation) must both hold data."""
    for role, split in (("validation", cfg.data.val_split), ("test", cfg.data.test_split)):
        if not data.split(split):
            raise UsageError(f"{data.source}: the {role} split {split!r} is empty (splits: {data.splits}); tune "
                             f"searches on validation and evaluates the winner on test")


def _check_metric(metric: str | None) -> str:
    from cliptune.train.early_stop import metric_names

    metric = metric or DEFAULT_METRIC
    if metric not in metric_names():
        raise UsageError(f"--metric {metric!r}: expected one of {', '.join(metric_names())}")
    return metric


def new_settings(base: dict[str, Any], overrides: list[str], recipe: str | None, budget: str, seed: int,
                 metric: str | None, max_trials: int | None) -> tuple[TuneSettings, Config]:
    """Validated settings of a new search from a base config tree (nothing created yet)."""
    from cliptune.train.rebuild import load_run_data

    budget_s, metric = parse_budget(budget), _check_metric(metric)
    cfg = load_config(None, [*overrides, f"train.early_stop_metric={metric}"], base=base)
    return _settings_for(cfg, load_run_data(cfg), recipe, budget, budget_s, seed, metric, max_trials), cfg


def command_settings(config_path: str | None, overrides: list[str], recipe: str | None, budget: str, seed: int,
                     metric: str | None, max_trials: int | None) -> tuple[TuneSettings, Config, str]:
    """As `cliptune train` resolves a run (defaults ← recipe, named or chosen for the device, model and data ←
    config file ← --set), validated; also returns why that recipe."""
    from cliptune.recipes.resolve import resolve_config

    budget_s, metric = parse_budget(budget), _check_metric(metric)
    resolved = resolve_config(config_path, [*overrides, f"train.early_stop_metric={metric}"], recipe)
    name = resolved.choice.recipe.name if resolved.choice is not None else None
    settings = _settings_for(resolved.cfg, resolved.data, name, budget, budget_s, seed, metric, max_trials)
    return settings, resolved.cfg, resolved.reason


def _settings_for(cfg: Config, data: Dataset, recipe: str | None, budget: str, budget_s: float, seed: int,
                  metric: str, max_trials: int | None) -> TuneSettings:
    from cliptune.train.checks import check_config

    if cfg.train.task != "retrieval":
        raise UsageError("tune searches retrieval recipes; train.task=match is not supported")
    check_config(cfg)
    check_splits(cfg, data)
    facts = model_facts(cfg)
    return TuneSettings(recipe=recipe, base=json.loads(cfg.model_dump_json()), space=default_space(facts).describe(),
                        facts=facts.__dict__, budget=budget, budget_s=budget_s, seed=seed, metric=metric,
                        max_trials=max_trials)


def create_tune_dir(output_dir: str | Path, name: str | None) -> Path:
    path = Path(output_dir) / (name or datetime.now().strftime("tune-%Y%m%d-%H%M%S"))
    if path.exists() and any(path.iterdir()):
        hint = f"--resume {path}" if (path / SETTINGS_FILE).is_file() else "another --name"
        raise UsageError(f"{path} already exists; use {hint}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def space_of(settings: TuneSettings) -> tuple[SearchSpace, Config]:
    """The search space and base config a saved search was started with."""
    facts = ModelFacts(**settings.facts)
    space = default_space(facts)
    if space.describe() != settings.space:
        raise UsageError("the search space of this cliptune version differs from the one in tune.json; resume "
                         "with the version that started the search")
    return space, load_config(None, [], base=settings.base)
