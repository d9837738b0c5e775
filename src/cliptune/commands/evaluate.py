"""`cliptune eval`: retrieval metrics of any model on any split; subcommands add other evaluations.

`eval` is a group that runs retrieval itself when no subcommand is named, so `cliptune eval --model M --data D`
keeps working while `cliptune eval zeroshot ...` (commands/classify.py) lives beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries


eval_app = typer.Typer()
app.add_typer(eval_app, name="eval")

REQUIRED = ("model", "data")  # required for retrieval only; a subcommand brings its own options


@eval_app.callback(invoke_without_command=True)
def eval_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", help="Model spec or run directory. [required]"),
    data: Optional[str] = typer.Option(None, "--data", help="Data spec. [required]"),
    split: str = typer.Option("test", "--split", help="Split to evaluate ('all' for every record)."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json here."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    skipped_path: Optional[Path] = typer.Option(None, "--skipped", help="With --on-bad-sample skip: write every "
                                                "skipped sample as CSV here (file, row, key, reason)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Retrieval metrics both ways (R@1/5/10, mAP, NDCG@10, MRR, median rank) on one split.

    `cliptune eval zeroshot --help` for zero-shot classification accuracy on class folders.
    """
    from cliptune.errors import UsageError

    if ctx.invoked_subcommand is not None:
        given = [p.opts[0] for p in ctx.command.params if ctx.params.get(p.name) != p.default]
        if given:
            raise UsageError(f"{', '.join(given)} given before {ctx.invoked_subcommand!r}: options before a "
                             f"subcommand belong to retrieval eval; write cliptune eval {ctx.invoked_subcommand} "
                             f"--model ... instead")
        return
    missing = [f"--{name}" for name, value in zip(REQUIRED, (model, data)) if value is None]
    if missing:
        raise UsageError(f"missing option {' and '.join(missing)} (cliptune eval --help for usage)")
    quiet_libraries()
    from cliptune.data.skipped import distinct, summary, write_skipped
    from cliptune.inference.evaluate import evaluate_records
    from cliptune.models.registry import load_model
    from cliptune.report.table import comparison_table, metrics_record, write_json_atomic

    dataset = _dataset(model, data, format, image_root, on_bad_sample)
    if skipped_path is not None:
        write_skipped(skipped_path, dataset.skipped)
    if dataset.skipped:
        console.print(summary(dataset.skipped, skipped_path), markup=False, highlight=False)
    records = dataset.records if split == "all" else dataset.split(split)
    if not records:
        raise UsageError(f"{data}: split {split!r} is empty; splits found: {dataset.splits or ['(none)']}")
    encoder = load_model(model)
    metrics = evaluate_records(encoder, records, progress=progress_enabled(quiet), batch_size=batch_size)
    payload = metrics_record(metrics, model=model, data=data, split=split,
                             skipped=len(distinct(dataset.skipped)))
    out.print(comparison_table(metrics, title=f"{model} on {split} ({metrics['n_images']} images, "
                                              f"{metrics['n_texts']} captions)"))
    if out_path is not None:
        write_json_atomic(out_path, payload)
        console.print(f"wrote {out_path}")


def _dataset(model: str, data: str, format: Optional[str], image_root: Optional[str], on_bad_sample: str):
    """The data to evaluate. When the model is a run directory and --data is its training data, the run's data as
    it saw it (train/rebuild.py: its split ratios and seed, and its --val-data/--test-data as the val/test
    splits), so `--split test` means the run's own held-out set; otherwise --data as given."""
    from cliptune.data.load import load_dataset
    from cliptune.train.rebuild import is_run_data, load_run_data, run_config

    cfg = run_config(model)
    if cfg is None:
        return load_dataset(data, format=format, image_root=image_root, on_bad_sample=on_bad_sample)
    if is_run_data(cfg, data) and format is None and image_root is None and not cfg.data.streaming:
        cfg.data.on_bad_sample = on_bad_sample
        return load_run_data(cfg, group=True)
    return load_dataset(data, format=format, image_root=image_root, on_bad_sample=on_bad_sample,
                        split_ratios=cfg.data.split_ratios, seed=cfg.data.split_seed)
