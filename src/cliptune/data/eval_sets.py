"""Validation and test data given as their own specs (`data.val_path`, `data.test_path`).

Streamed training data is never indexed, so it cannot be split: a streamed run evaluates on separate, smaller data,
read map-style like any other spec (a CSV, a COCO file, a few shards). Without streaming the same fields replace
the val/test split of `data.path`. Every record of such a spec is used, whatever split it declares, and
`data.image_root`, `data.on_bad_sample` and the WebDataset keys apply to it as to `data.path`. Evaluation images
that are training images too (same file or same picture) are reported before training (`data/overlap.py`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cliptune.data.formats import FORMATS, detect_format
from cliptune.data.load import load_dataset
from cliptune.data.overlap import find_overlap, shared_shards, warn
from cliptune.data.records import Dataset, Record
from cliptune.data.wds import expand_shards, is_shard_spec


def eval_overrides(d) -> dict[str, str]:
    """split name -> data spec, for the evaluation splits the config gives their own data."""
    return {name: path for name, path in ((d.val_split, d.val_path), (d.test_split, d.test_path)) if path}


def load_eval_set(spec: str, split: str, d, group: bool = True) -> Dataset:
    """Every record of `spec`, labelled as `split`."""
    fmt = detect_format(Path(spec))  # data.format names the format of data.path, not of these
    keys = {"image_key": d.wds_image_key, "caption_key": d.wds_caption_key}
    options = keys if "image_key" in FORMATS.get(fmt).options else {}
    data = load_dataset(spec, format=fmt, image_root=d.image_root, on_bad_sample=d.on_bad_sample, group=group,
                        format_options=options)
    return Dataset([replace(r, split=split) for r in data.records], source=data.source, skipped=data.skipped)


def with_eval_sets(data: Dataset | None, d, group: bool = True) -> Dataset:
    """`data` with its evaluation splits replaced by the configured specs (or only those, when `data` is None)."""
    overrides = eval_overrides(d)
    records = [r for r in data.records if r.split not in overrides] if data is not None else []
    skipped = list(data.skipped) if data is not None else []
    train = [r for r in records if r.split == d.train_split]
    for split, spec in overrides.items():
        extra = load_eval_set(spec, split, d, group=group)
        _warn_overlap(train, data is None, extra.records, split, spec, d)
        records.extend(extra.records)
        skipped.extend(extra.skipped)
    source = data.source if data is not None else str(d.path)
    return Dataset(records, source=source, skipped=skipped)


def _warn_overlap(train: list[Record], streamed: bool, evaluation: list[Record], split: str, spec: str, d) -> None:
    """Warn (loudly, before training) about evaluation images that are training images too."""
    if not streamed:
        warn(find_overlap(train, evaluation, split, spec))
    elif is_shard_spec(d.path):
        warn(shared_shards(expand_shards(d.path), evaluation, split, spec))
