"""Named training recipes (YAML in `catalog/`), the automatic choice by device, model and data size, the plan
printed before a run and its wall-time estimate."""

from cliptune.recipes.catalog import Recipe, all_recipes, get_recipe

__all__ = ["Recipe", "all_recipes", "get_recipe"]
