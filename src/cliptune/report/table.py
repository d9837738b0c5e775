"""The before/after table printed at the end of `train` and by `eval`, and the metrics.json layout (DESIGN.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.table import Table

TABLE_METRICS = ("R@1", "R@5", "R@10", "mAP")


def metrics_record(metrics: dict, *, model: str, data: str, split: str, skipped: int = 0) -> dict:
    """One evaluation in the metrics.json shape: t2i/i2t blocks, counts, provenance."""
    return {"t2i": metrics["t2i"], "i2t": metrics["i2t"], "n_images": metrics["n_images"],
            "n_texts": metrics["n_texts"], "model": model, "data": data, "split": split, "skipped_samples": skipped}


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _relative(before: float, after: float) -> str:
    if before <= 0:
        return "n/a" if after <= 0 else "+∞"
    return f"{(after - before) / before * 100:+.1f}%"


def comparison_table(after: dict, before: dict | None = None, title: str = "retrieval") -> Table:
    table = Table(title=title)
    table.add_column("direction")
    table.add_column("metric")
    if before is not None:
        table.add_column("before", justify="right")
    table.add_column("after" if before is not None else "value", justify="right")
    if before is not None:
        table.add_column("change", justify="right")
    for direction, label in (("t2i", "text→image"), ("i2t", "image→text")):
        for metric in TABLE_METRICS:
            a = after[direction][metric]
            if before is None:
                table.add_row(label, metric, f"{a:.4f}")
            else:
                b = before[direction][metric]
                table.add_row(label, metric, f"{b:.4f}", f"{a:.4f}", _relative(b, a))
    return table
