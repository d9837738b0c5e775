"""Start or continue a search: every setting is checked (budget, metric, base config, data splits) before the tune
directory is created; a resume reads it all back from tune.json."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cliptune.config import Config, load_config
from cliptune.errors import UsageError
from cliptune.tune.budget import parse_budget
from cliptune.tune.settings import DEFAULT_METRIC, SETTINGS_FILE, TuneSettings
from cliptune.tune.space import ModelFacts, SearchSpace, default_space, model_facts


def recipe_base(name: str) -> dict[str, Any]:
    """The config tree of a named recipe (`cliptune.recipes`)."""
    try:
        from cliptune.recipes import get_recipe
    except ImportError:
        raise UsageError(f"--recipe {name}: named recipes are not available in this installation; pass a base "
                         f"config file instead (cliptune tune CONFIG.yaml --data ...)") from None
    return json.loads(json.dumps(get_recipe(name).config))


def check_data(cfg: Config) -> None:
    """The validation split (searched on) and the test split (the winner's one evaluation) must both hold data."""
    from cliptune.train.rebuild import load_run_data

    data = load_run_data(cfg)
    for role, split in (("validation", cfg.data.val_split), ("test", cfg.data.test_split)):
        if not data.split(split):
            raise UsageError(f"{data.source}: the {role} split {split!r} is empty (splits: {data.splits}); tune "
                             f"searches on validation and evaluates the winner on test")


def new_settings(base: dict[str, Any], overrides: list[str], recipe: str | None, budget: str, seed: int,
                 metric: str | None, max_trials: int | None) -> tuple[TuneSettings, Config]:
    """Validated settings of a new search (nothing created yet)."""
    from cliptune.train.checks import check_config
    from cliptune.train.early_stop import metric_names

    budget_s = parse_budget(budget)
    metric = metric or DEFAULT_METRIC
    if metric not in metric_names():
        raise UsageError(f"--metric {metric!r}: expected one of {', '.join(metric_names())}")
    cfg = load_config(None, [*overrides, f"train.early_stop_metric={metric}"], base=base)
    if cfg.train.task != "retrieval":
        raise UsageError("tune searches retrieval recipes; train.task=match is not supported")
    check_config(cfg)
    check_data(cfg)
    facts = model_facts(cfg)
    space = default_space(facts)
    settings = TuneSettings(recipe=recipe, base=json.loads(cfg.model_dump_json()), space=space.describe(),
                            facts=facts.__dict__, budget=budget, budget_s=budget_s, seed=seed, metric=metric,
                            max_trials=max_trials)
    return settings, cfg


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
