"""`cliptune eval`: retrieval metrics of any model on any split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Model spec or run directory."),
    data: str = typer.Option(..., "--data", help="Data spec."),
    split: str = typer.Option("test", "--split", help="Split to evaluate ('all' for every record)."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json here."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Retrieval metrics both ways (R@1/5/10, mAP, NDCG@10, MRR, median rank) on one split."""
    quiet_libraries()
    from cliptune.data.load import load_dataset
    from cliptune.errors import UsageError
    from cliptune.inference.evaluate import evaluate_records
    from cliptune.models.registry import load_model
    from cliptune.report.table import comparison_table, metrics_record, write_json_atomic

    dataset = load_dataset(data, format=format, image_root=image_root, on_bad_sample=on_bad_sample)
    records = dataset.records if split == "all" else dataset.split(split)
    if not records:
        raise UsageError(f"{data}: split {split!r} is empty; splits found: {dataset.splits or ['(none)']}")
    encoder = load_model(model)
    metrics = evaluate_records(encoder, records, progress=progress_enabled(quiet), batch_size=batch_size)
    payload = metrics_record(metrics, model=model, data=data, split=split, skipped=len(dataset.skipped))
    out.print(comparison_table(metrics, title=f"{model} on {split} ({metrics['n_images']} images, "
                                              f"{metrics['n_texts']} captions)"))
    if out_path is not None:
        write_json_atomic(out_path, payload)
        console.print(f"wrote {out_path}")
