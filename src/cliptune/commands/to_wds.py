"""`cliptune data to-wds`: any supported data spec → WebDataset shards, one prefix per split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import console, data_app, out


@data_app.command("to-wds")
def to_wds_cmd(
    data: str = typer.Argument(..., help="Data spec (csv, json, COCO, Karpathy, folder, shards)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the shards (train-000000.tar, val-000000.tar, ...)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Samples (images) per shard."),
    reencode: Optional[str] = typer.Option(None, "--reencode", help="Re-encode images as jpg, png or webp "
                                                                    "(default: copy the bytes as they are)."),
    quality: int = typer.Option(90, "--quality", help="JPEG/WebP quality when re-encoding."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    skipped_path: Optional[Path] = typer.Option(None, "--skipped", help="With --on-bad-sample skip: write every "
                                                "skipped sample as CSV here (default: OUT/skipped.csv)."),
    split_ratios: str = typer.Option("0.8,0.1,0.1", "--split-ratios", help="train,val,test shares for data "
                                                                           "without splits."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split assignment for data without splits."),
):
    """Write shards from any supported format; each is written to a temporary file and renamed when complete."""
    from rich.table import Table

    from cliptune.data.load import load_dataset
    from cliptune.data.skipped import SKIPPED_CSV, summary, write_skipped
    from cliptune.data.to_wds import write_shards
    from cliptune.errors import UsageError

    try:
        ratios = tuple(float(x) for x in split_ratios.split(","))
    except ValueError:
        raise UsageError(f"--split-ratios expects three numbers like 0.8,0.1,0.1, got {split_ratios!r}") from None
    dataset = load_dataset(data, format=format, image_root=image_root, on_bad_sample=on_bad_sample,
                           split_ratios=ratios, seed=seed)
    result = write_shards(dataset, out_dir, shard_size, reencode=reencode, quality=quality)
    listed = skipped_path or out_dir / SKIPPED_CSV
    write_skipped(listed, dataset.skipped)
    if dataset.skipped:
        console.print(summary(dataset.skipped, listed), markup=False, highlight=False)
    table = Table(title=f"WebDataset shards in {out_dir}")
    for column in ("split", "pattern", "shards", "samples", "MB"):
        table.add_column(column, justify="left" if column in ("split", "pattern") else "right")
    for split, info in result.splits.items():
        table.add_row(split, str(out_dir / info.pattern), str(len(info.shards)), str(info.samples),
                      f"{info.bytes / 1e6:.1f}")
    out.print(table)
    if result.removed:
        console.print(f"removed {len(result.removed)} shard(s) left by an earlier conversion")
