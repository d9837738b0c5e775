"""The one in-memory record every source format is read into.

A *row* is what a format yields (one image reference with one or more captions, from one place in one file).
A *record* is one image with all its captions: rows that share an image are merged, because several captions of
one image are several positives for retrieval, not several images.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One entry as read from a source, before grouping; `file` and `row` make error messages precise."""

    image: str  # absolute path, or a key inside a shard for streamed formats
    captions: list[str]
    file: str
    row: int | str  # 1-based data row number (header excluded) or a key
    label: int | None = None
    split: str | None = None
    id: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Record:
    """One image with every caption that describes it."""

    image: str
    captions: list[str]
    split: str | None = None
    label: int | None = None
    id: str | None = None
    sources: list[tuple[str, int | str]] = field(default_factory=list)  # (file, row) of each contributing row
    meta: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        file, row = self.sources[0] if self.sources else ("?", "?")
        return f"{file}, row {row}"


@dataclass
class BadSample:
    """A sample that was skipped under `--on-bad-sample skip`; kept so the summary and metrics.json can count it."""

    file: str
    row: int | str
    reason: str
    kind: str | None = None  # a problem kind as `cliptune validate` groups them (None: the reader's own)

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}: {self.reason}"


@dataclass
class Dataset:
    """What a data spec resolves to: records, grouped by image, with their splits, plus what was skipped."""

    records: list[Record]
    source: str
    skipped: list[BadSample] = field(default_factory=list)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records if r.split is not None})


def group_rows(rows: list[Row]) -> list[Record]:
    """Merge rows that share an image into one record, keeping first-seen order and dropping repeated captions."""
    by_image: dict[str, Record] = {}
    for row in rows:
        rec = by_image.get(row.image)
        if rec is None:
            rec = Record(image=row.image, captions=[], split=row.split, label=row.label, id=row.id, meta=dict(row.meta))
            by_image[row.image] = rec
        for caption in row.captions:
            if caption not in rec.captions:
                rec.captions.append(caption)
        rec.sources.append((row.file, row.row))
        if rec.split is None:
            rec.split = row.split
    return list(by_image.values())
