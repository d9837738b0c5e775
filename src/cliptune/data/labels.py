"""What a `label` column means, decided once for `validate`, `eval` and `train`: it depends on the task.

* retrieval: a label belongs to the image (a class id, say). An integer label is kept as the record's label, and
  the rows of one image must agree on it, since they are merged into one record. Anything else ("cat", 3.5) is no
  class id the code could use: it is kept as metadata (`meta["label"]`), not refused, since retrieval does not
  need labels. Rows of one image that disagree are usually match data (1 = this caption fits, 0 = it does not)
  read as retrieval, which would train the non-matching captions as descriptions: the message says so.
* match: a label belongs to an (image, text) pair: 1 when the text describes the image, 0 when it does not. One
  image with a row labelled 1 and another labelled 0 is the normal layout; the same pair labelled both ways is a
  contradiction. Labels must be 0 or 1. A row without one is fine when reading (`cliptune match --csv` scores
  unlabelled pairs); training and `validate --task match` refuse unlabelled data as a whole.

A problem is (kind, reason) for the row that has it; kinds are the ones `cliptune validate` groups by, and a
problem is a bad sample like any other (an error naming file and row, or skipped with `--on-bad-sample skip`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from cliptune.data.records import Row
from cliptune.errors import UsageError

TASKS = ("retrieval", "match")
BAD_LABEL, LABEL_CONFLICT = "bad_label", "label_conflict"
MATCH_MEANING = "match labels are 1 (the text describes the image) or 0 (it does not)"
USE_MATCH = ("if the labels say whether each caption fits its image, this is match data: train it with "
             "--set train.task=match (check it with validate --task match), or keep only the rows labelled 1 "
             "for retrieval; otherwise give the image one label")

Problem = tuple[str, str]  # (kind, reason)


def integer_label(value: object) -> int | None:
    """3, "3" and 3.0 (spreadsheets write ints as floats) are 3; empty is None; 3.5 or "cat" raise ValueError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    try:
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(value) from None
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError(value)
    return int(number)


@dataclass(frozen=True)
class LabelRules:
    """The label rules of one task (see the module docstring)."""

    task: str = "retrieval"

    def __post_init__(self):
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")

    def clean(self, row: Row) -> Row | Problem:
        """The row with its label as an int (or, for retrieval, a non-integer label moved to metadata)."""
        try:
            label = integer_label(row.label)
        except ValueError:
            if self.task == "retrieval":
                return replace(row, label=None, meta={**row.meta, "label": row.label})
            return BAD_LABEL, f"label {row.label!r} is not 0 or 1 ({MATCH_MEANING})"
        if self.task == "match" and label is not None and label not in (0, 1):
            return BAD_LABEL, f"label {label} is not 0 or 1 ({MATCH_MEANING})"
        return replace(row, label=label)

    def conflicts(self, rows: Sequence[Row]) -> dict[int, Problem]:
        """index in `rows` -> problem, for each (cleaned) row whose label contradicts the first row it shares an
        image (retrieval) or an image and text (match) with; the first row is kept."""
        first: dict[tuple, Row] = {}
        problems: dict[int, Problem] = {}
        for i, row in enumerate(rows):
            if row.label is None and self.task == "retrieval":
                continue
            key = (row.image,) if self.task == "retrieval" else (row.image, tuple(_norm(c) for c in row.captions))
            seen = first.setdefault(key, row)
            if seen.label != row.label:
                problems[i] = (LABEL_CONFLICT, self._conflict(row, seen))
        return problems

    def _conflict(self, row: Row, seen: Row) -> str:
        where = f"{seen.file}, row {seen.row}"
        if self.task == "match":
            return (f"label {row.label} here but {seen.label} at {where} for the same image and text; a pair either "
                    "matches or does not: fix one of the two rows")
        return f"label {row.label} here but {seen.label} at {where} for the same image; {USE_MATCH}"


def _norm(caption: str) -> str:
    return " ".join(caption.lower().split())


__all__ = ["BAD_LABEL", "LABEL_CONFLICT", "TASKS", "LabelRules", "integer_label"]
