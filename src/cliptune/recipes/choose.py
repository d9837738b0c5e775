"""The automatic recipe choice: the first recipe (by priority) whose `auto` rule fits the situation.

The rules live in the recipe files, so changing which recipe a CPU user gets is a data change, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliptune.errors import UsageError
from cliptune.recipes.catalog import Recipe, all_recipes, get_recipe
from cliptune.recipes.situation import Situation


@dataclass(frozen=True)
class Choice:
    recipe: Recipe
    reason: str  # why this recipe: "chosen for …" or "asked for with --recipe"


def _rule_fits(recipe: Recipe, s: Situation) -> bool:
    rule = recipe.auto
    if rule is None or s.device not in rule.devices:
        return False
    if "any" not in rule.families and s.family not in rule.families:
        return False
    return s.n_pairs >= rule.min_pairs and (rule.max_pairs is None or s.n_pairs <= rule.max_pairs)


def choose_recipe(situation: Situation) -> Choice:
    candidates = sorted((r for r in all_recipes().values() if _rule_fits(r, situation)),
                        key=lambda r: (r.auto.priority, r.name))
    if not candidates:  # the catalog has a catch-all per device; this is a packaging error
        raise RuntimeError(f"no recipe fits {situation.describe()}")
    return Choice(candidates[0], f"chosen for {situation.describe()}")


def named_recipe(name: str, family: str) -> Choice:
    """`--recipe NAME`: refused for a model family it was not written for (its settings may not apply)."""
    recipe = get_recipe(name)
    if not recipe.fits(family):
        fitting = [r.name for r in all_recipes().values() if r.fits(family)]
        raise UsageError(f"recipe {name!r} is for {', '.join(recipe.families)} models, not {family}; "
                         f"recipes for {family}: {', '.join(fitting)}")
    return Choice(recipe, "asked for with --recipe")
