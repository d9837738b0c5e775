"""From a data spec to a checked, grouped, split `Dataset`: the one door every command uses to read data.

Every format is checked the same way here, so "bad input" means the same thing everywhere: a row with a missing or
undecodable image, an empty caption, a label the task's rules refuse (`data/labels.py`) or an unknown split is
either the error (the first one, naming its file and row) or, with on_bad_sample="skip", left out and listed in
`Dataset.skipped`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cliptune.data.formats import FORMATS, Format, detect_format
from cliptune.data.images import check_image
from cliptune.data.labels import LabelRules
from cliptune.data.records import BadSample, Dataset, Record, Row, group_rows
from cliptune.data.skipped import summary
from cliptune.data.splits import assign_splits, normalize_ratios, normalize_split
from cliptune.errors import DataError, UsageError
from cliptune.utils.registry import Registry

log = logging.getLogger(__name__)

CHECK_THREADS = min(16, 4 * (os.cpu_count() or 1))  # image checks wait on disk more than on the CPU


@dataclass(frozen=True)
class BadSamplePolicy:
    """What `on_bad_sample` does with the problems found; `first_only` lets checking stop at the first one."""

    apply: Callable[[list[BadSample], str], None]
    first_only: bool


BAD_SAMPLE_POLICIES: Registry[BadSamplePolicy] = Registry("on-bad-sample policy")


def _raise_first(problems: list[BadSample], source: str) -> None:
    if problems:
        first = problems[0]
        more = (f" (and at least {len(problems) - 1} more bad sample(s): `cliptune validate {source}` lists every "
                "one; --on-bad-sample skip leaves them out and writes the list to skipped.csv)") \
            if len(problems) > 1 else ""
        raise DataError(first.reason + more, file=first.file, row=first.row)


def _report(problems: list[BadSample], source: str) -> None:
    if problems:  # the first few; commands write every one to skipped.csv (data/skipped.py)
        log.warning("%s: %s", source, summary(problems))


BAD_SAMPLE_POLICIES.register("error")(BadSamplePolicy(_raise_first, first_only=True))
BAD_SAMPLE_POLICIES.register("skip")(BadSamplePolicy(_report, first_only=False))


def load_dataset(spec: str | Path, *, format: str | None = None, image_root: str | Path | None = None,
                 on_bad_sample: str = "error", check_images: bool = True, group: bool = True,
                 split_ratios: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1), seed: int = 0,
                 format_options: Mapping[str, object] | None = None, task: str | None = None) -> Dataset:
    """Read `spec`, check every row, group rows by image (unless `group=False`) and make sure every record has a
    split, assigning one per image (seeded, `split_ratios` of train/val/test) when the data has none.

    `check_images` decodes every image cheaply up front so a broken file fails now, not mid-epoch.
    `format_options` go to the format's reader (e.g. WebDataset `image_key`, `caption_key`); None values are
    left out, so a config's unset fields mean the reader's defaults.
    `task` picks the label rules (`data/labels.py`); by default "retrieval" when rows are grouped by image and
    "match" when they are not (match data is read one pair per record).
    """
    policy = BAD_SAMPLE_POLICIES.get(on_bad_sample)
    rules = LabelRules(task or ("retrieval" if group else "match"))
    try:
        shares = normalize_ratios(split_ratios)
    except ValueError as e:
        raise UsageError(str(e)) from None
    path = Path(spec)
    fmt = FORMATS.get(format or detect_format(path))
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError("image root is not a folder", file=str(root))

    items = list(read_source(fmt, path, root, format_options))
    rows, problems = _validate(items, local_images=fmt.local_images, check_images=check_images,
                               stop_early=policy.first_only, rules=rules)
    policy.apply(problems, str(path))
    if not rows:
        detail = f"all {len(problems)} were bad, first: {problems[0]}" if problems else "the source holds none"
        raise DataError(f"no usable samples ({detail})", file=str(path))

    _check_split_coverage(rows)
    _check_split_agreement(rows)
    records = group_rows(rows) if group else [_record(row) for row in rows]
    if all(record.split is None for record in records):
        base = root or (path if path.is_dir() else path.parent)
        assign_splits(records, shares, seed, key=lambda record: split_key(record.image, base))
    return Dataset(records=records, source=str(path), skipped=problems)


def read_source(fmt: Format, path: Path, root: Path | None,
                options: Mapping[str, object] | None = None) -> Iterable[Row | BadSample]:
    """`fmt.read(path, root, **options)`, refusing options the format does not take (a typo is a usage error)."""
    options = {key: value for key, value in (options or {}).items() if value is not None}
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        takes = ", ".join(fmt.options) or "none"
        raise UsageError(f"format {fmt.name!r} takes no option(s) {', '.join(unknown)} (it takes: {takes})")
    return fmt.read(path, root, **options)


# ---- row checks -------------------------------------------------------------------------------------------------

def check_row(row: Row, local_images: bool, rules: LabelRules = LabelRules()) -> Row | str:
    """The cleaned row (stripped captions, label by the task's rules, canonical split), or why it is unusable."""
    result = row_problem(row, local_images, rules)
    return result if isinstance(result, Row) else result[1]


# kinds of row problem, as `cliptune validate` groups them (label kinds live in data/labels.py)
EMPTY_CAPTION, BAD_SPLIT, MISSING_IMAGE = "empty_caption", "bad_split", "missing_image"
UNREADABLE_IMAGE = "unreadable_image"


def row_problem(row: Row, local_images: bool, rules: LabelRules = LabelRules()) -> Row | tuple[str, str]:
    """The cleaned row, or (kind, reason) for the first thing wrong with it."""
    captions = [c.strip() for c in row.captions]
    if not captions or all(not c for c in captions):
        return EMPTY_CAPTION, "empty caption"
    if not all(captions):
        return EMPTY_CAPTION, f"caption {captions.index('') + 1} of {len(captions)} is empty"
    labelled = rules.clean(row)
    if not isinstance(labelled, Row):
        return labelled
    try:
        split = normalize_split(row.split)
    except ValueError as e:
        return BAD_SPLIT, str(e)
    if local_images and not os.path.isfile(row.image):
        return MISSING_IMAGE, f"image not found: {row.image}"
    return Row(image=row.image, captions=captions, file=row.file, row=row.row, label=labelled.label, split=split,
               id=row.id, meta=labelled.meta)


def _validate(items: list[Row | BadSample], *, local_images: bool, check_images: bool, stop_early: bool,
              rules: LabelRules) -> tuple[list[Row], list[BadSample]]:
    """Rows that pass, and the problems in source order. With `stop_early` only rows before the first cheap
    problem have their images decoded: the first problem is all the error policy reports."""
    checked: list[Row | BadSample] = []
    for item in items:
        if isinstance(item, BadSample):
            checked.append(item)
            continue
        result = row_problem(item, local_images, rules)
        checked.append(result if isinstance(result, Row) else BadSample(item.file, item.row, result[1], result[0]))
    good = [i for i, item in enumerate(checked) if isinstance(item, Row)]
    for i, (kind, reason) in rules.conflicts([checked[i] for i in good]).items():  # type: ignore[misc]
        row = checked[good[i]]
        checked[good[i]] = BadSample(row.file, row.row, reason, kind)
    if check_images:  # archive members (local_images=False) are checked in place, through the same resolver
        first_bad = next((i for i, item in enumerate(checked) if isinstance(item, BadSample)), len(checked))
        limit = first_bad if stop_early else len(checked)
        reasons = _image_problems({item.image for item in checked[:limit] if isinstance(item, Row)})
        checked = [BadSample(item.file, item.row, f"{reasons[item.image]}: {item.image}", UNREADABLE_IMAGE)
                   if isinstance(item, Row) and reasons.get(item.image) else item for item in checked]
    rows = [item for item in checked if isinstance(item, Row)]
    problems = [item for item in checked if isinstance(item, BadSample)]
    return rows, problems


def _image_problems(images: set[str]) -> dict[str, str | None]:
    """image -> reason it will not load (None when fine), checked in parallel."""
    ordered = sorted(images)
    if len(ordered) <= 1:
        return {image: check_image(image) for image in ordered}
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check-image") as pool:
        return dict(zip(ordered, pool.map(check_image, ordered)))


# ---- whole-dataset checks ---------------------------------------------------------------------------------------

def _check_split_coverage(rows: list[Row]) -> None:
    """Either every row says its split or none does: a half-split dataset is ambiguous, not guessable."""
    without = [row for row in rows if row.split is None]
    if without and len(without) < len(rows):
        first = without[0]
        raise DataError(f"{len(rows) - len(without)} of {len(rows)} samples have a split and {len(without)} do not "
                        "(this is the first without); give every sample a split, or none to have them assigned",
                        file=first.file, row=first.row)


def _check_split_agreement(rows: list[Row]) -> None:
    """Rows of one image must agree on the split, else the image leaks across splits (labels: data/labels.py)."""
    first_row: dict[str, Row] = {}
    for row in rows:
        seen = first_row.setdefault(row.image, row)
        if row.split != seen.split:
            raise DataError(f"image {row.image} has split {row.split!r} here but {seen.split!r} at {seen.file}, "
                            f"row {seen.row}; rows of one image must be in one split", file=row.file, row=row.row)


def _record(row: Row) -> Record:
    return Record(image=row.image, captions=list(row.captions), split=row.split, label=row.label, id=row.id,
                  sources=[(row.file, row.row)], meta=dict(row.meta))


def split_key(image: str, base: Path) -> str:
    """The image path relative to the dataset, so the assigned split survives moving the dataset folder."""
    base_text = os.path.abspath(base)
    if os.path.isabs(image) and os.path.commonpath([image, base_text]) == base_text:
        return os.path.relpath(image, base_text).replace(os.sep, "/")
    return image
