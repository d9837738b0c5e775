"""`cliptune tune`: search recipes on the validation split within a time budget, then evaluate the winner on test."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries

DEFAULT_BUDGET = "20m"


@app.command()
def tune(
    config: Optional[Path] = typer.Argument(None, help="YAML or JSON config, over the recipe (as in train)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data spec (data.path)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Validation data spec (data.val_path)."),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="Test data spec (data.test_path)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (model.spec)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe the search starts from (default: the one "
                                         "train would choose; `cliptune recipes` lists them; none: defaults)."),
    set_: list[str] = typer.Option([], "--set", help="Override a base config value (repeatable)."),
    budget: Optional[str] = typer.Option(None, "--budget", help=f"Time for the trials: 90s, 20m, 1h, 1h30m "
                                         f"(default {DEFAULT_BUDGET}; with --resume: a new total)."),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", min=1, help="Stop after this many trials."),
    seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Validation metric to maximise (default mean_mAP)."),
    name: Optional[str] = typer.Option(None, "--name", help="Tune run name (directory under --output-dir)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Where the tune directory goes (runs/)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the search in this tune directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Search unfreezing, learning rates, loss, augmentation, epochs and image size with Optuna (TPE + median
    pruning) on the validation split; the winner alone is evaluated on the test split (metrics.json)."""
    from cliptune.errors import UsageError
    from cliptune.tune.budget import parse_budget

    if budget is not None:
        parse_budget(budget)  # a bad value exits 2 before anything is read or created
    quiet_libraries()
    if resume is not None:
        given = [opt for opt, value in (("CONFIG", config), ("--data", data), ("--val-data", val_data),
                                        ("--test-data", test_data), ("--model", model), ("--set", set_),
                                        ("--recipe", recipe),
                                        ("--metric", metric), ("--name", name), ("--output-dir", output_dir))
                 if value]
        if given:
            raise UsageError(f"--resume continues the saved search as it was set up; {', '.join(given)} cannot "
                             f"change it (only --budget and --max-trials can)")
        settings, tune_dir = _resumed(resume, budget, max_trials)
    else:
        settings, tune_dir = _new(config, data, val_data, test_data, model, recipe, set_, budget, max_trials, seed,
                                  metric, name, output_dir)
    _run(settings, tune_dir, progress_enabled(quiet))


def _new(config, data, val_data, test_data, model, recipe, set_, budget, max_trials, seed, metric, name, output_dir):
    from cliptune.tune.setup import command_settings, create_tune_dir

    overrides = list(set_)
    for key, value in (("data.path", data), ("data.val_path", val_data), ("data.test_path", test_data),
                       ("model.spec", model)):
        if value is not None:
            overrides.append(f"{key}={value}")
    settings, cfg, reason = command_settings(str(config) if config else None, overrides, recipe,
                                             budget or DEFAULT_BUDGET, seed, metric, max_trials)
    tune_dir = create_tune_dir(output_dir or cfg.train.output_dir, name)
    console.print(f"base: recipe {settings.recipe or '(none)'} ({reason})", highlight=False)
    console.print(f"tune directory: [bold]{tune_dir}[/] (budget {settings.budget}, search space: "
                  f"{', '.join(settings.space)})")
    return settings, tune_dir


def _resumed(path: Path, budget: str | None, max_trials: int | None):
    from cliptune.tune.budget import format_seconds, parse_budget
    from cliptune.tune.settings import TuneSettings

    settings = TuneSettings.load(path)
    if budget is not None:
        settings.budget, settings.budget_s = budget, parse_budget(budget)
    if max_trials is not None:
        settings.max_trials = max_trials
    left = settings.budget_s - settings.spent_s
    console.print(f"resuming {path}: {format_seconds(settings.spent_s)} of {settings.budget} spent, "
                  f"{format_seconds(max(0.0, left))} left")
    return settings, path


def _run(settings, tune_dir: Path, progress: bool) -> None:
    from cliptune.report.table import comparison_table
    from cliptune.tune.leaderboard import leaderboard_table
    from cliptune.tune.search import run_tune

    try:
        result = run_tune(settings, tune_dir, console=console, progress=progress and console.is_terminal)
    finally:
        _print_leaderboard(tune_dir, settings.metric, leaderboard_table)
    final = result.final
    console.print(f"search ended: {result.stop_reason}; winner: trial {result.winner} "
                  f"({tune_dir / 'trials' / str(result.winner) / 'model'})")
    out.print(comparison_table(final.after, final.before, probe=final.probe, gains=final.gains,
                               title=f"winner (trial {result.winner}) on the {final.split} split "
                                     f"({final.after['n_images']} images)"))
    console.print(f"metrics.json, leaderboard.json, tune.png, study.db in [bold]{tune_dir}[/]")


def _print_leaderboard(tune_dir: Path, metric: str, table) -> None:
    """The leaderboard as the study holds it, also when the search ended without a winner."""
    from cliptune.tune.leaderboard import leaderboard
    from cliptune.tune.search import study_if_exists

    study = study_if_exists(tune_dir)
    if study is not None:
        out.print(table(leaderboard(study), metric))
