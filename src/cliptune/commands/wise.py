"""`cliptune wise`: WiSE-FT (Wortsman et al. 2022) on a finished run — interpolate base and fine-tuned weights,
evaluate each α on the target split (and a general set), pick α by a stated rule, export that model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, quiet_libraries


def _run_config(tuned: Path):
    """The run's resolved config when `tuned` is a run directory, else None."""
    from cliptune.train.rebuild import run_config

    return run_config(tuned)


def _target_records(cfg, data_spec: str, split: str, load_kw: dict):
    """The split α is chosen on: the run's own split (its val data when it had `--val-data`) when `data_spec` is
    the run's data, else that split of `data_spec` as given."""
    from cliptune.train.rebuild import is_run_data, load_run_data, run_split
    from cliptune.train.wise import load_records

    if cfg is not None and is_run_data(cfg, data_spec) and not (load_kw["format"] or load_kw["image_root"]):
        separate = {cfg.data.val_split: cfg.data.val_path, cfg.data.test_split: cfg.data.test_path}.get(split)
        return run_split(cfg, split, load_run_data(cfg, group=True)), separate or data_spec
    return load_records(data_spec, split, **load_kw), data_spec


def _base_state(base_spec: str, cfg):
    """θ_base: the run's starting weights (train/rebuild.py) when `base_spec` is its model, else `base_spec` as is."""
    from cliptune.models.registry import load_model
    from cliptune.train.rebuild import base_model

    same_spec = cfg is not None and base_spec == cfg.model.spec
    return (base_model(cfg) if same_spec else load_model(base_spec)).state_dict()


@app.command()
def wise(
    tuned: Path = typer.Option(..., "--tuned", help="The fine-tuned run directory (or an exported model folder)."),
    base: Optional[str] = typer.Option(None, "--base", help="The model fine-tuning started from (default: the "
                                                            "run's model.spec from its config.yaml)."),
    alphas: str = typer.Option("0:1:0.1", "--alphas", help="Mixing coefficients: start:stop:step (ends included) "
                                                           "or a comma list; 0 = base, 1 = fine-tuned."),
    data: Optional[str] = typer.Option(None, "--data", help="Target data α is chosen on (default: the run's "
                                                            "data.path)."),
    split: str = typer.Option("val", "--split", help="Split of --data to evaluate (never choose α on test)."),
    general: Optional[str] = typer.Option(None, "--general", help="A general image–text set, to weigh what the "
                                                                  "base model knew against the target gain."),
    general_split: str = typer.Option("all", "--general-split", help="Split of --general ('all': every record)."),
    rule: Optional[str] = typer.Option(None, "--rule", help="target | average | min-drop:D (default: average "
                                                            "with --general, else target)."),
    metric: str = typer.Option("mean_R@10", "--metric", help="Score per α: mean_R@K or e.g. t2i/R@1."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: TUNED/wise)."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format of --data."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Choose a WiSE-FT mix θ(α) = (1−α)·θ_base + α·θ_tuned: writes OUT/model, OUT/wise.json and OUT/wise.png.

    Rules: `target` picks the α with the best target score; `average` the best mean of target and general
    scores; `min-drop:D` the best target score among α whose general score is at most D below the base's.
    Ties go to the smaller α.
    """
    from cliptune.errors import UsageError
    from cliptune.wise_rule import parse_alphas, parse_rule

    grid = parse_alphas(alphas)  # bad grids and rules fail before any model is loaded
    chosen_rule = parse_rule(rule, general is not None)
    if not tuned.is_dir():
        raise UsageError(f"--tuned {tuned}: no such directory")
    cfg = _run_config(tuned)
    if base is None and cfg is None:
        raise UsageError(f"--tuned {tuned} is not a run directory (no config.yaml): give the model it was "
                         f"fine-tuned from with --base")
    base_spec = base or cfg.model.spec
    data_spec = data or (cfg.data.path if cfg is not None else None)
    if data_spec is None:
        raise UsageError("no target data: give --data (the run's data.path is used for a run directory)")
    quiet_libraries()
    from cliptune.models.registry import load_model
    from cliptune.report.wise_plot import write_tradeoff_plot
    from cliptune.train.precision import resolve_device
    from cliptune.train.wise import load_records, run_wise_ft

    load_kw = dict(format=format, image_root=image_root, on_bad_sample=on_bad_sample)
    target_records, target_source = _target_records(cfg, data_spec, split, load_kw)
    general_records = load_records(general, general_split, on_bad_sample=on_bad_sample) if general else None
    tuned_model = load_model(tuned).to(resolve_device(device))
    base_state = _base_state(base_spec, cfg)
    out_dir = out_dir or (tuned / "wise")

    def report(row: dict) -> None:
        general_text = f", general {row['general']:.4f}" if row["general"] is not None else ""
        console.print(f"alpha {row['alpha']:g}: target {row['target']:.4f}{general_text}", highlight=False)

    payload = run_wise_ft(
        base_state, tuned_model, target_records, general_records, alphas=grid, rule=chosen_rule, out_dir=out_dir,
        metric=metric, on_alpha=None if quiet else report, progress=False, batch_size=batch_size,
        plot=write_tradeoff_plot,
        describe={"base": base_spec, "tuned": str(tuned), "target_data": str(target_source), "target_split": split,
                  "general_data": general, "general_split": general_split if general else None})
    out.print(_table(payload))
    console.print(f"chosen alpha {payload['chosen_alpha']:g} ({payload['rule_description']}); wrote "
                  f"{out_dir / 'model'}, {out_dir / 'wise.json'}, {out_dir / 'wise.png'}", highlight=False)


def _table(payload: dict):
    from rich.table import Table

    has_general = payload["n_general_records"] is not None
    table = Table(title=f"WiSE-FT sweep ({payload['metric']}; rule {payload['rule']})")
    table.add_column("alpha", justify="right")
    table.add_column("target", justify="right")
    if has_general:
        table.add_column("general", justify="right")
        table.add_column("mean", justify="right")
    table.add_column("")
    for row in payload["alphas"]:
        cells = [f"{row['alpha']:g}", f"{row['target']:.4f}"]
        if has_general:
            cells += [f"{row['general']:.4f}", f"{(row['target'] + row['general']) / 2:.4f}"]
        cells.append("← chosen" if row["alpha"] == payload["chosen_alpha"] else "")
        table.add_row(*cells)
    return table
