"""The full list of what `--on-bad-sample skip` left out: `runs/<name>/skipped.csv`, or the `--skipped` path of
`eval`, `validate` and `data to-wds`.

One line per distinct sample (file and row, or file and key for shards and folders), with the reason. Distinct
means a sample met again (a second epoch of a stream, a second load) is listed and counted once, so the count in
`metrics.json` is the number of lines here. `SkipLog` collects skips from several processes (DataLoader workers
of a stream) in an append-only file, read back distinct.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path

from cliptune.data.records import BadSample

log = logging.getLogger(__name__)

SKIPPED_CSV = "skipped.csv"
COLUMNS = ("file", "row", "key", "reason")
SHOWN = 5  # lines of the list printed in a summary; the file holds all of them


def distinct(samples: Iterable[BadSample]) -> list[BadSample]:
    """First occurrence of each (file, row), in order."""
    seen: dict[tuple[str, str], BadSample] = {}
    for sample in samples:
        seen.setdefault((sample.file, str(sample.row)), sample)
    return list(seen.values())


def _line(sample: BadSample) -> list[str]:
    number = isinstance(sample.row, int) and not isinstance(sample.row, bool)
    return [sample.file, str(sample.row) if number else "", "" if number else str(sample.row), sample.reason]


def write_skipped(path: str | os.PathLike, samples: Iterable[BadSample]) -> int:
    """Write the distinct samples as CSV (header only when none), atomically; returns how many were written."""
    rows = distinct(samples)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_line(sample) for sample in rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return len(rows)


def read_skipped(path: str | os.PathLike) -> list[BadSample]:
    """The samples of a file `write_skipped` (or `SkipLog`) wrote."""
    with open(path, newline="", encoding="utf-8") as f:
        return [_sample(line) for line in csv.DictReader(f, fieldnames=COLUMNS) if line["file"] != "file"]


def _sample(line: dict) -> BadSample:
    row: int | str = int(line["row"]) if line["row"] else line["key"]
    return BadSample(line["file"], row, line["reason"])


def summary(samples: list[BadSample], where: str | os.PathLike | None = None) -> str:
    """'skipped N bad sample(s) ...' with the first few, saying where the full list is."""
    rows = distinct(samples)
    listed = f"; every one is listed in {where}" if where is not None else ""
    shown = "".join(f"\n  {sample}" for sample in rows[:SHOWN])
    more = f"\n  ... and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    return f"skipped {len(rows)} bad sample(s){listed}:{shown}{more}"


def write_run_skipped(run_dir: str | os.PathLike, samples: Iterable[BadSample], console=None) -> int:
    """`run_dir/skipped.csv` (always written, so an empty list is a fact, not a missing file); prints the summary
    when there is something to say; returns the distinct count for metrics.json."""
    samples = list(samples)
    path = Path(run_dir) / SKIPPED_CSV
    count = write_skipped(path, samples)
    if count and console is not None:
        console.print(summary(samples, path), markup=False, highlight=False)
    return count


class SkipLog:
    """Skipped samples from every process that holds a copy of this object (DataLoader workers, forked or
    spawned): each `add` appends one CSV line (one write to an O_APPEND file, so lines do not interleave).
    The file is removed when the creating process drops the log."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="cliptune-skipped-", suffix=".csv")
        os.close(fd)
        weakref.finalize(self, _remove, self.path, os.getpid())

    def add(self, sample: BadSample) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(_line(sample))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, buffer.getvalue().encode("utf-8"))
        finally:
            os.close(fd)

    def samples(self) -> list[BadSample]:
        """Every distinct sample added so far, by any process."""
        try:
            return distinct(read_skipped(self.path))
        except FileNotFoundError:
            return []


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker exiting must not remove its parent's log
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


__all__ = ["SKIPPED_CSV", "SkipLog", "distinct", "read_skipped", "summary", "write_run_skipped", "write_skipped"]
