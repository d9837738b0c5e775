"""`cliptune train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from cliptune.errors import UsageError

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML or JSON config with sections model/data/loss/train/eval."),
    data: Optional[str] = typer.Option(None, "--data", help="Data spec (overrides data.path)."),
    val_data: Optional[str] = typer.Option(None, "--val-data",
                                           help="Validation data spec, used whole (data.val_path)."),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="Test data spec, used whole (data.test_path)."),
    streaming: bool = typer.Option(False, "--streaming", help="Stream WebDataset shards instead of indexing them "
                                   "(data.streaming; evaluation then needs --val-data/--test-data)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (overrides model.spec)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Training recipe (`cliptune recipes` lists them; "
                                         "default: chosen for the device, model and data size; none: built-in "
                                         "defaults). The config file and --set override it."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set train.lr=1e-4 (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (directory under train.output_dir)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Where run directories go (default runs/)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume the run in this directory."),
    on_bad_sample: Optional[str] = typer.Option(None, "--on-bad-sample", help="error (default) or skip."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Fine-tune a dual encoder; evaluates before and after on the test split and writes the run directory."""
    quiet_libraries()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for the run
        console.quiet = out.quiet = quiet = True
    from cliptune.report.table import results_table
    from cliptune.report.wise_plot import write_tradeoff_plot
    from cliptune.recipes.announce import plan_hook
    from cliptune.recipes.resolve import new_run
    from cliptune.train.run import resolve_run, train_run

    overrides = list(set_)
    if streaming:
        overrides.append("data.streaming=true")
    for key, value in (("data.path", data), ("data.val_path", val_data), ("data.test_path", test_data),
                       ("model.spec", model), ("train.name", name),
                       ("train.output_dir", output_dir), ("data.on_bad_sample", on_bad_sample)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if resume is not None:
        if recipe is not None:
            raise UsageError("--recipe applies to a new run; a resumed run keeps the settings in its config.yaml")
        cfg, run = resolve_run(None, overrides, str(resume))
        data, before_fit = None, None
    else:
        resolved, run = new_run(str(config) if config else None, overrides, recipe)
        cfg, data = resolved.cfg, resolved.data
        before_fit = plan_hook(resolved, run, console.print)
    console.print(f"run directory: [bold]{run.path}[/]")
    result = train_run(cfg, run, resume=resume is not None, progress=progress_enabled(quiet), console=console,
                       wise_plot=write_tradeoff_plot, data=data, before_fit=before_fit)
    write_run_report(cfg, run, result, progress_enabled(quiet), console)
    if result.after is not None:
        out.print(results_table(result.after, result.before, title=f"{cfg.model.spec} on {cfg.eval.split} split",
                                probe=result.probe, gains=result.gains))
    console.print(summary_line(result), highlight=False)


def write_run_report(cfg, run, result, progress: bool, console) -> None:
    """report.html of a finished run (eval.report), by rank 0; training itself never imports the report."""
    if result.after is None or not cfg.eval.report or int(os.environ.get("RANK", "0")) != 0:
        return
    from cliptune.report.html import write_report

    console.print(f"report: {write_report(run.path, progress=progress)}")


def summary_line(result) -> str:
    """The end of a run in one line: steps (this process's share after a resume), its wall time, the best step and
    whether early stopping ended the run."""
    start = result.resumed_from or 0
    steps = f"steps {start + 1}-{result.steps}" if start else f"{result.steps} steps"
    best = f"best step {result.best_step}" if result.best_step is not None else "no validation (best = last)"
    stopped = "stopped early" if result.stopped_early else "no early stop"
    return (f"{steps} in {result.wall_s:.1f} s (this process); {best}; {stopped}; "
            f"run directory: {result.run_dir}")
