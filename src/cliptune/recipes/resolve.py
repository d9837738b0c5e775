"""Which recipe a run gets, and its config: defaults ← recipe ← config file ← `--set`.

The user's own settings are read and validated first (nothing is created yet), then the data is read, since the
automatic choice depends on its size; the recipe is then placed under the user's settings. `--recipe none` keeps
the built-in defaults. A match run (`train.task=match`) or a streamed one keeps its own defaults: the recipes are
measured on retrieval with an indexed training split.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliptune.config import Config, load_config
from cliptune.data.records import Dataset
from cliptune.errors import UsageError
from cliptune.recipes.choose import Choice, choose_recipe, named_recipe
from cliptune.recipes.situation import Situation, count_pairs, device_kind, model_family

NO_RECIPE = "none"


@dataclass
class Resolved:
    cfg: Config
    choice: Choice | None
    reason: str  # why this recipe (or why none)
    data: Dataset


def _why_none(user: Config, recipe: str | None) -> str | None:
    if recipe == NO_RECIPE:
        return "--recipe none: built-in defaults"
    if user.train.task != "retrieval" or user.data.streaming:
        what = "match task" if user.train.task != "retrieval" else "streamed data"
        if recipe is not None:
            raise UsageError(f"--recipe {recipe}: recipes are for retrieval on indexed data, not a {what} run")
        return f"{what}: its own defaults"
    return None


def resolve_config(config_path: str | None, overrides: list[str], recipe: str | None) -> Resolved:
    """The run's config with its recipe, and its data (read once, here)."""
    from cliptune.train.rebuild import load_run_data

    user = load_config(config_path, overrides)
    data = load_run_data(user)
    none = _why_none(user, recipe)
    if none is not None:
        return Resolved(user, None, none, data)
    family = model_family(user.model.spec)
    if recipe is not None:
        choice = named_recipe(recipe, family)
    else:
        kind, n_devices = device_kind(user.train.device)
        choice = choose_recipe(Situation(kind, n_devices, family, count_pairs(data.split(user.data.train_split))))
    cfg = load_config(config_path, overrides, base=choice.recipe.config)
    return Resolved(cfg, choice, choice.reason, data)


def new_run(config_path: str | None, overrides: list[str], recipe: str | None):
    """A new run's resolved config and its directory: every setting checked before the directory is created."""
    import os

    from cliptune.train.checks import check_config
    from cliptune.train.rundir import RunDir

    resolved = resolve_config(config_path, overrides, recipe)
    check_config(resolved.cfg)
    other_rank = int(os.environ.get("RANK", "0")) != 0  # under torchrun, only rank 0 insists on a new directory
    if other_rank and not resolved.cfg.train.name:
        raise UsageError("with several processes, give the run a name (--name) so every rank writes to the same one")
    return resolved, RunDir.create(resolved.cfg.train.output_dir, resolved.cfg.train.name, exist_ok=other_rank)
