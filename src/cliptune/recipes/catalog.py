"""Recipes: named, versioned training settings kept as YAML data in the package (`recipes/catalog/*.yaml`).

A recipe is a partial config (model / loss / augment / train / eval sections) plus what it is for and when
`cliptune train` picks it by itself. It sits between the built-in defaults and the user's own settings:
defaults ← recipe ← config file ← `--set`, so every explicit setting wins. Recipes never set data, output or
task settings: those belong to the user's run, and the data is read before a recipe is chosen.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cliptune.errors import UsageError

DeviceKind = Literal["cpu", "gpu", "multi-gpu"]
RECIPE_SECTIONS = ("model", "loss", "augment", "train", "eval")
USER_ONLY_KEYS = {"train": ("output_dir", "name", "task", "device"), "model": ("spec",)}


class AutoRule(BaseModel):
    """When the automatic choice may take this recipe: every listed condition must hold; lower priority wins."""

    model_config = ConfigDict(extra="forbid")
    devices: list[DeviceKind]
    families: list[str] = Field(default_factory=lambda: ["any"])  # model families (recipes/situation.py)
    min_pairs: int = Field(0, ge=0)
    max_pairs: int | None = Field(None, ge=1)
    priority: int = 100


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    summary: str  # one line: what it trains
    use_when: str  # one line: what it is for, and its cost
    families: list[str] = Field(default_factory=lambda: ["any"])  # models it is meant for
    faster: str | None = None  # the recipe to name when this one's estimate is too long
    auto: AutoRule | None = None
    config: dict[str, Any]

    @field_validator("config")
    @classmethod
    def _sections(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(RECIPE_SECTIONS))
        if unknown:
            raise ValueError(f"sections {unknown} are not recipe settings (allowed: {list(RECIPE_SECTIONS)})")
        for section, keys in USER_ONLY_KEYS.items():
            clash = sorted(set(v.get(section) or {}) & set(keys))
            if clash:
                raise ValueError(f"{section}.{clash[0]} is the user's setting, not a recipe's")
        return v

    def fits(self, family: str) -> bool:
        return "any" in self.families or family in self.families


def _parse(name: str, text: str) -> Recipe:
    try:
        return Recipe.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as err:  # a packaging error: fail loudly, naming the file
        raise RuntimeError(f"recipe file {name} is invalid: {err}") from None


@lru_cache(maxsize=1)
def all_recipes() -> dict[str, Recipe]:
    """Every recipe shipped in the package, by name (read once)."""
    out: dict[str, Recipe] = {}
    for entry in sorted(resources.files("cliptune.recipes").joinpath("catalog").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            recipe = _parse(entry.name, entry.read_text(encoding="utf-8"))
            if recipe.name in out or recipe.name != entry.name[: -len(".yaml")]:
                raise RuntimeError(f"recipe file {entry.name}: its name must be unique and match the file name")
            out[recipe.name] = recipe
    return out


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    if name not in recipes:
        raise UsageError(f"unknown recipe {name!r}; known: {', '.join(recipes)} (see `cliptune recipes`)")
    return recipes[name]
