"""`cliptune demo`: the main job on the embedded default — build the emoji data, fine-tune `lite`, show the gain.

The demo is `cliptune train --data <emoji.csv>` with a few fixed settings: it takes the recipe that command would
choose on this machine (`cpu-fast` on a CPU: see `cliptune recipes`), or `cpu-quick` with `--quick`, prints the same
plan and time estimate, and ends with the before / after table on the emoji test split.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.report.table import comparison_table
from cliptune.train.run import train_run

QUICK_RECIPE = "cpu-quick"


def demo_overrides(data_path: str, output_dir: str, name: str, overrides: list[str]) -> list[str]:
    """The demo's own settings (model, data, run name, test split); `--set` comes last and wins."""
    return ["model.spec=lite", f"data.path={data_path}", f"train.output_dir={output_dir}", f"train.name={name}",
            "eval.split=test", *overrides]


def demo_config(quick: bool, data_path: str, output_dir: str, name: str, overrides: list[str]):
    """The demo's resolved config and recipe choice (nothing is created)."""
    from cliptune.recipes.resolve import resolve_config

    return resolve_config(None, demo_overrides(data_path, output_dir, name, overrides),
                          QUICK_RECIPE if quick else None)


def _free_name(output_dir: Path, stem: str) -> str:
    name, i = stem, 1
    while (output_dir / name).exists():
        i += 1
        name = f"{stem}-{i}"
    return name


def run_demo(quick: bool, data_dir: Path, output_dir: Path, overrides: list[str], progress: bool, console, out):
    from cliptune.data.builders.emoji import build_emoji
    from cliptune.recipes.announce import plan_hook
    from cliptune.recipes.resolve import new_run

    csv_path = data_dir / "emoji.csv"
    if not csv_path.is_file():
        console.print(f"building the emoji dataset in {data_dir} (once) …")
    csv_path = build_emoji(data_dir, progress=progress)
    name = _free_name(output_dir, "demo-quick" if quick else "demo")
    resolved, run = new_run(None, demo_overrides(str(csv_path), str(output_dir), name, overrides),
                            QUICK_RECIPE if quick else None)
    cfg = resolved.cfg
    console.print(f"fine-tuning [bold]{cfg.model.spec}[/] on {csv_path} → [bold]{run.path}[/]")
    result = train_run(cfg, run, progress=progress, console=console, data=resolved.data,
                       before_fit=plan_hook(resolved, run, console.print))
    if cfg.eval.report and result.after is not None:
        from cliptune.report.html import write_report

        console.print(f"report: {write_report(run.path, progress=progress)}")
    out.print(comparison_table(result.after, result.before, title=f"{cfg.model.spec} on the emoji test split "
                                                                  f"({result.after['n_images']} images)",
                               probe=result.probe, gains=result.gains))
    console.print(f"{result.steps} steps, {result.wall_s:.0f} s. Run directory: [bold]{run.path}[/] "
                  f"(metrics.json, plan.json, history.csv, model/)")
    return result
