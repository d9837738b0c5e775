"""`cliptune recipes`: the training recipes, what each is for, when it is chosen, and its settings."""

from __future__ import annotations

from typing import Optional

import typer

from cliptune.cli import app, out


def _when(recipe) -> str:
    rule = recipe.auto
    if rule is None:
        return "only with --recipe"
    size = f"≥ {rule.min_pairs:,} pairs" if rule.min_pairs else ""
    size += (", " if size else "") + f"≤ {rule.max_pairs:,} pairs" if rule.max_pairs else ""
    who = "any model" if "any" in rule.families else "/".join(rule.families) + " models"
    return f"auto: {'/'.join(rule.devices)}, {who}" + (f", {size}" if size else "") + \
        f" (priority {rule.priority}: the lowest that fits wins)"


@app.command("recipes")
def recipes_cmd(
    show: Optional[str] = typer.Argument(None, help="A recipe name: print its settings as YAML."),
):
    """List the training recipes `cliptune train --recipe NAME` takes (and which one it picks by itself)."""
    from rich.table import Table

    from cliptune.recipes import all_recipes, get_recipe

    if show is not None:
        import yaml

        recipe = get_recipe(show)
        out.print(f"# {recipe.name}: {recipe.summary}\n# for: {recipe.use_when}\n# {_when(recipe)}",
                  highlight=False, soft_wrap=True)
        out.print(yaml.safe_dump(recipe.config, sort_keys=False), highlight=False, end="")
        return
    table = Table(title="recipes (cliptune train --recipe NAME; cliptune recipes NAME for its settings)",
                  show_lines=True)
    for column in ("name", "what trains", "for", "chosen"):
        table.add_column(column, overflow="fold")
    for recipe in all_recipes().values():
        table.add_row(recipe.name, recipe.summary, recipe.use_when, _when(recipe))
    out.print(table)
