"""Reading a run's history.jsonl from tests that watch a training process from outside."""

from __future__ import annotations

import json
from pathlib import Path


def train_steps(history: Path) -> list[int]:
    """Steps of the train events logged so far (a line being written may be incomplete: skipped)."""
    if not history.is_file():
        return []
    steps = []
    for line in history.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "train":
            steps.append(entry["step"])
    return steps
