"""Training history: one JSON object per line as it happens (`history.jsonl`), flattened to `history.csv`, and the
same scalars in TensorBoard.

A kill can leave the last line half-written; reading drops such a torn last line (a resume then rewrites the file
without it). A resumed run tells TensorBoard to purge the steps it redoes, so no step appears twice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cliptune.errors import CliptuneError


class History:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled  # only one process of a distributed run writes
        self.jsonl = run_dir / "history.jsonl"
        self.csv = run_dir / "history.csv"
        self._tb = None
        self._tb_dir = run_dir / "tensorboard"
        self._purge_step: int | None = None  # TensorBoard drops its events from this step on (a resume redoes them)

    def log(self, entry: dict) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        self._tensorboard(entry)

    def _tensorboard(self, entry: dict) -> None:
        try:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self._tb_dir), purge_step=self._purge_step)
        except ImportError:  # tensorboard is optional at run time
            return
        prefix = entry.get("event", "train") if entry.get("event") == "train" else f"{entry.get('split', 'eval')}"
        if entry.get("phase"):
            prefix += f"_{entry['phase']}"
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                self._tb.add_scalar(f"{prefix}/{key}", value, entry.get("step", 0))
        self._tb.flush()

    def resume_after(self, step: int) -> None:
        """A resumed run continues after `step` (−1: from scratch): drop what was logged after it, here and in
        TensorBoard."""
        self.truncate_after(step)
        self._purge_step = step + 1

    def truncate_after(self, step: int) -> None:
        """Drop entries logged after `step` (a resumed run redoes those steps and logs them again)."""
        if not self.enabled or not self.jsonl.is_file():
            return
        kept = [e for e in self.entries() if int(e.get("step", 0)) <= step]
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")
        tmp.replace(self.jsonl)

    def entries(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        lines = [line for line in self.jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
        entries = []
        for number, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines):  # torn by a kill mid-write: the step is redone on resume
                    break
                raise CliptuneError(f"{self.jsonl}: line {number} is not JSON ({err.msg}); remove or fix it") from None
        return entries

    def write_csv(self) -> Path:
        if not self.enabled:
            return self.csv
        rows = self.entries()
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        tmp = self.csv.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.csv)
        return self.csv
