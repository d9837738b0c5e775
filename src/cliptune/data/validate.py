"""`cliptune validate`: everything wrong with a dataset in one pass, counted, with the first offending rows.

Unlike `load_dataset`, which stops at the first problem (or skips what `--on-bad-sample skip` allows), this keeps
going and reports every kind of problem: missing columns, missing or undecodable images, empty captions,
captions the model will truncate, bad labels, duplicate pairs, one image in two splits, tiny images.

"Usable" means exactly what training would accept with the same `on_bad_sample`: with "error" any bad row makes
the data unusable (exit 2); with "skip" bad rows are counted warnings and the data is usable as long as some rows
survive and nothing spoils the whole source (a missing column, an image in two splits, labels a match task
cannot train on). Warnings (truncated captions, duplicates, tiny images, imbalance) never make data unusable.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cliptune.data.caption_length import token_counts
from cliptune.data.formats import FORMATS, detect_format
from cliptune.data.images import inspect_image, read_image_bytes
from cliptune.data.labels import BAD_LABEL, LABEL_CONFLICT, TASKS, LabelRules
from cliptune.data.load import CHECK_THREADS, MISSING_IMAGE, UNREADABLE_IMAGE, read_source, row_problem, split_key
from cliptune.data.records import BadSample, Row, group_rows
from cliptune.data.tar_integrity import DAMAGE_KIND
from cliptune.data.splits import assign_splits, normalize_ratios
from cliptune.errors import DataError, UsageError

DEFAULT_CONTEXT_LENGTH = 77  # CLIP's
SMALL_IMAGE = 32  # pixels on the shorter side; below this an image is mostly upsampling blur at any model size
MINORITY_SHARE = 0.1  # a match label rarer than this is flagged as imbalanced
MAX_EXAMPLES = 5  # shown per issue in the table; the JSON report and --skipped list every occurrence

ERROR, WARNING, INFO = "error", "warning", "info"
ROW_PROBLEM_TITLES = {
    DAMAGE_KIND: "truncated or corrupt shards (the rest of each is unread)",
    "malformed_row": "rows the reader cannot use",
    "empty_caption": "empty or whitespace-only captions",
    BAD_LABEL: "labels the task cannot use (match: 0 or 1)",
    LABEL_CONFLICT: "labels contradicting an earlier row (retrieval: same image; match: same image and text)",
    "bad_split": "unknown split names",
    MISSING_IMAGE: "image files missing",
    UNREADABLE_IMAGE: "images that do not decode",
}


@dataclass
class Example:
    file: str
    row: int | str | None
    detail: str

    @property
    def where(self) -> str:
        return self.file if self.row is None else f"{self.file}:{self.row}"


@dataclass
class Issue:
    """One kind of problem: how many, how bad, and every place it occurs (the table shows the first few)."""

    check: str
    title: str
    severity: str
    count: int
    examples: list[Example] = field(default_factory=list)


@dataclass
class ValidationReport:
    data: str
    task: str
    on_bad_sample: str
    context_length: int
    format: str | None = None
    usable: bool = False
    counts: dict = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    image_sizes: dict = field(default_factory=dict)
    caption_tokens: dict = field(default_factory=dict)
    labels: dict | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    def add(self, check: str, title: str, severity: str, examples: Sequence[Example], count: int | None = None):
        count = len(examples) if count is None else count
        if count:
            self.issues.append(Issue(check, title, severity, count, list(examples)))

    def bad_rows(self) -> list[BadSample]:
        """Every row that `--on-bad-sample skip` leaves out, as skipped.csv lists them."""
        return [BadSample(e.file, e.row if e.row is not None else "", e.detail, issue.check)
                for issue in self.issues if issue.check in ROW_PROBLEM_TITLES for e in issue.examples]

    def to_json(self) -> dict:
        payload = asdict(self)
        for issue in payload["issues"]:
            for example in issue["examples"]:
                example["where"] = example["file"] if example["row"] is None else f"{example['file']}:{example['row']}"
        return payload


@dataclass
class _ImageInfo:
    reason: str | None
    size: tuple[int, int] | None
    digest: str | None


def validate_dataset(spec: str | Path, *, format: str | None = None, image_root: str | Path | None = None,
                     task: str = "retrieval", context_length: int = DEFAULT_CONTEXT_LENGTH,
                     on_bad_sample: str = "error",
                     split_ratios: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1), seed: int = 0,
                     format_options: Mapping[str, object] | None = None,
                     threads: int = CHECK_THREADS) -> ValidationReport:
    """Check `spec` as `load_dataset` would read it, and report every problem (see the module docstring)."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if on_bad_sample not in ("error", "skip"):
        raise UsageError(f"unknown on-bad-sample policy {on_bad_sample!r}; use error or skip")
    if context_length < 3:
        raise UsageError(f"context length must be at least 3, got {context_length}")
    t0 = time.perf_counter()
    path = Path(spec)
    report = ValidationReport(str(spec), task, on_bad_sample, context_length)
    try:
        report.format = format or detect_format(path)
        fmt = FORMATS.get(report.format)
        root = Path(image_root) if image_root is not None else None
        if root is not None and not root.is_dir():
            raise DataError("image root is not a folder", file=str(root))
        items = list(read_source(fmt, path, root, format_options))
    except DataError as err:  # the whole source is unusable: missing column, no header, empty, bad JSON ...
        report.add("source", "the source cannot be read", ERROR, [Example(err.file or str(spec), err.row, err.reason)])
        report.seconds = round(time.perf_counter() - t0, 3)
        return report

    row_severity = ERROR if on_bad_sample == "error" else WARNING
    rows, problems = _row_checks(items, fmt.local_images, LabelRules(task))
    images = _inspect_images({row.image for row in rows}, threads)
    good: list[Row] = []
    for row in rows:
        info = images[row.image]
        if info.reason is not None:
            problems[UNREADABLE_IMAGE].append(Example(row.file, row.row, f"{info.reason}: {row.image}"))
        else:
            good.append(row)
    for kind, title in ROW_PROBLEM_TITLES.items():
        report.add(kind, title, row_severity, problems.get(kind, []))

    report.counts = {"rows": len(items), "usable_rows": len(good), "bad_rows": len(items) - len(good),
                     "images": len({r.image for r in good}),
                     "captions": sum(len(r.captions) for r in good)}
    if not good:
        report.add("no_samples", "no usable samples", ERROR,
                   [Example(str(spec), None, "every row has a problem" if items else "the source holds no rows")])
    _check_splits(report, good, path, root, split_ratios, seed, images)
    _check_duplicates(report, good, task, images)
    _check_captions(report, good, context_length)
    _check_image_sizes(report, good, images)
    if task == "match":
        _check_match_labels(report, good)
    report.usable = not report.errors
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


# ---- rows -------------------------------------------------------------------------------------------------------

def _row_checks(items: list[Row | BadSample], local_images: bool,
                rules: LabelRules) -> tuple[list[Row], dict[str, list[Example]]]:
    """Rows that pass the per-row checks and the label rules (exactly as `load_dataset` applies them), and the
    problems by kind."""
    rows: list[Row] = []
    problems: dict[str, list[Example]] = defaultdict(list)
    for item in items:
        if isinstance(item, BadSample):
            kind = item.kind or ("empty_caption" if "empty caption" in item.reason else "malformed_row")
            problems[kind].append(Example(item.file, item.row, item.reason))
            continue
        result = row_problem(item, local_images, rules)
        if isinstance(result, Row):
            rows.append(result)
        else:
            problems[result[0]].append(Example(item.file, item.row, result[1]))
    conflicts = rules.conflicts(rows)
    for i, (kind, reason) in sorted(conflicts.items()):
        problems[kind].append(Example(rows[i].file, rows[i].row, reason))
    return [row for i, row in enumerate(rows) if i not in conflicts], problems


def _inspect(image: str) -> _ImageInfo:
    try:
        data = read_image_bytes(image)
    except OSError as e:
        return _ImageInfo(str(e) if "member" in str(e) else f"cannot read image file: {e.strerror or e}", None, None)
    reason, size = inspect_image(data)
    return _ImageInfo(reason, size, hashlib.blake2b(data, digest_size=16).hexdigest())


def _inspect_images(images: set[str], threads: int) -> dict[str, _ImageInfo]:
    """Decode check, size and content hash of each image, read once, in parallel (disk waits release the GIL)."""
    ordered = sorted(images)
    if len(ordered) <= 1 or threads <= 1:
        return {image: _inspect(image) for image in ordered}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="validate-image") as pool:
        return dict(zip(ordered, pool.map(_inspect, ordered, chunksize=64)))


# ---- whole-dataset checks ---------------------------------------------------------------------------------------

def _check_splits(report: ValidationReport, rows: list[Row], path: Path, root: Path | None,
                  ratios, seed: int, images: dict[str, _ImageInfo]) -> None:
    with_split = [r for r in rows if r.split is not None]
    if with_split and len(with_split) < len(rows):
        missing = [Example(r.file, r.row, "no split, while other rows have one") for r in rows if r.split is None]
        report.add("partial_splits", "rows without a split in data that has splits", ERROR, missing)
    first: dict[str, Row] = {}
    conflicts = []
    for row in rows:
        seen = first.setdefault(row.image, row)
        if row.split != seen.split:
            conflicts.append(Example(row.file, row.row, f"image {row.image} is in {row.split!r} here but in "
                                                        f"{seen.split!r} at {seen.file}:{seen.row}"))
    report.add("image_in_two_splits", "the same image file in two splits", ERROR, conflicts)

    records = group_rows(rows)
    assigned = bool(records) and all(r.split is None for r in records)
    if assigned:  # the split training would assign, so leaks by content can be checked on it too
        base = root or (path if path.is_dir() else path.parent)
        assign_splits(records, normalize_ratios(ratios), seed, key=lambda rec: split_key(rec.image, base))
    report.counts["images_per_split"] = dict(Counter(r.split or "none" for r in records))
    report.counts["splits"] = "assigned (seeded, per image)" if assigned else "from the data"

    by_digest: dict[str, list] = defaultdict(list)
    for rec in records:
        digest = images[rec.image].digest
        if digest is not None:
            by_digest[digest].append(rec)
    leaks = []
    for same in by_digest.values():
        if len({rec.split for rec in same}) > 1:
            a, b = same[0], next(rec for rec in same if rec.split != same[0].split)
            leaks.append(Example(*_where(b), f"same picture as {a.image} ({a.split}) but in {b.split}: "
                                              f"{b.image}"))
    report.add("content_in_two_splits", "identical images in different splits", WARNING,
               leaks)


def _where(record) -> tuple[str, int | str | None]:
    return record.sources[0] if record.sources else (record.image, None)


def _norm(caption: str) -> str:
    return " ".join(caption.lower().split())


def _check_duplicates(report: ValidationReport, rows: list[Row], task: str, images: dict[str, _ImageInfo]) -> None:
    seen: dict[tuple[str, str], Row] = {}
    duplicates = []  # the same pair with another label is a label conflict, found with the row checks
    for row in rows:
        for caption in row.captions:
            pair = (row.image, _norm(caption))
            first = seen.setdefault(pair, row)
            if first is not row:
                duplicates.append(Example(row.file, row.row, f"same image and caption as {first.file}:{first.row}"))
    report.add("duplicate_pairs", "duplicate image-caption pairs", WARNING, duplicates)

    owners: dict[str, set[str]] = defaultdict(set)
    example_row: dict[str, Row] = {}
    for row in rows:
        for caption in row.captions:
            owners[_norm(caption)].add(row.image)
            example_row.setdefault(_norm(caption), row)
    shared = [(text, imgs) for text, imgs in owners.items() if len(imgs) > 1]
    # false negatives if two of them share a contrastive batch; the no-duplicate sampler keeps them apart
    report.add("shared_captions", "captions shared by several images", INFO,
               [Example(example_row[t].file, example_row[t].row, f"{len(imgs)} images: {t[:60]!r}")
                for t, imgs in shared], count=len(shared))

    by_digest: dict[str, list[str]] = defaultdict(list)
    for image in sorted({r.image for r in rows}):
        if images[image].digest is not None:
            by_digest[images[image].digest].append(image)
    copies = [paths for paths in by_digest.values() if len(paths) > 1]
    first_row = {}
    for row in rows:
        first_row.setdefault(row.image, row)
    report.add("duplicate_images", "identical images under different paths", WARNING,
               [Example(first_row[p[1]].file, first_row[p[1]].row, f"{p[1]} is a copy of {p[0]}"
                        + (f" (+{len(p) - 2} more)" if len(p) > 2 else "")) for p in copies],
               count=sum(len(p) - 1 for p in copies))


def _check_captions(report: ValidationReport, rows: list[Row], context_length: int) -> None:
    captions, where = [], []
    for row in rows:
        for caption in row.captions:
            captions.append(caption)
            where.append(row)
    if not captions:
        return
    counts, method = token_counts(captions, context_length)
    over = [i for i, n in enumerate(counts) if n > context_length]
    report.caption_tokens = {"context_length": context_length, "method": method, "over_context": len(over),
                             "median_lower_bound": statistics.median(counts), "max": max(counts)}
    report.add("caption_too_long", f"captions over {context_length} tokens (truncated)", WARNING,
               [Example(where[i].file, where[i].row, f"{counts[i]} tokens: {captions[i][:60]!r}...") for i in over])


def _check_image_sizes(report: ValidationReport, rows: list[Row], images: dict[str, _ImageInfo]) -> None:
    sizes = {r.image: images[r.image].size for r in rows if images[r.image].size is not None}
    if not sizes:
        return
    widths = [s[0] for s in sizes.values()]
    heights = [s[1] for s in sizes.values()]
    small = sorted(image for image, (w, h) in sizes.items() if min(w, h) < SMALL_IMAGE)
    report.image_sizes = {
        "images": len(sizes),
        "width": {"min": min(widths), "median": statistics.median(widths), "max": max(widths)},
        "height": {"min": min(heights), "median": statistics.median(heights), "max": max(heights)},
        f"below_{SMALL_IMAGE}px": len(small),
    }
    first_row = {}
    for row in rows:
        first_row.setdefault(row.image, row)
    report.add("small_images", f"images under {SMALL_IMAGE} px on the shorter side", WARNING,
               [Example(first_row[i].file, first_row[i].row, f"{sizes[i][0]}x{sizes[i][1]}: {i}") for i in small])


def _check_match_labels(report: ValidationReport, rows: list[Row]) -> None:
    """Training a match model needs a label on every pair (labels other than 0/1 are row problems already)."""
    missing = [Example(r.file, r.row, "no label (match labels are 1 = the text describes the image, 0 = it does "
                                      "not; training needs one on every row)") for r in rows if r.label is None]
    report.add("missing_labels", "rows without a 0/1 label", ERROR, missing)
    counts = Counter(r.label for r in rows if r.label in (0, 1))
    total = sum(counts.values())
    report.labels = {"0": counts.get(0, 0), "1": counts.get(1, 0),
                     "positive_share": round(counts.get(1, 0) / total, 4) if total else None}
    if total:
        minority = min(counts.get(0, 0), counts.get(1, 0))
        if minority / total < MINORITY_SHARE:
            rare = 0 if counts.get(0, 0) <= counts.get(1, 0) else 1
            report.add("label_imbalance", f"label {rare} is rare ({minority} of {total}); a threshold and F1 "
                       "tuned on it will be noisy", WARNING,
                       [Example(str(report.data), None, f"0: {counts.get(0, 0)}, 1: {counts.get(1, 0)}")])


def default_context_length(model: str | None) -> int:
    """The context length of `model` (loading it), or CLIP's 77 when no model is named."""
    if not model:
        return DEFAULT_CONTEXT_LENGTH
    from cliptune.models.registry import load_model

    return int(load_model(model).context_length)


__all__ = ["Example", "Issue", "ValidationReport", "default_context_length", "validate_dataset"]
