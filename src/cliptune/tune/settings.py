"""tune.json: everything a search needs to continue after a kill — the base recipe's resolved config, the search
space, the budget and what of it is spent, the seed and the selection metric. Written before the first trial,
updated as time is spent (atomically), read by `--resume`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cliptune.errors import UsageError
from cliptune.utils.atomic import write_json_atomic

SETTINGS_FILE = "tune.json"
DEFAULT_METRIC = "mean_mAP"  # what the trials are selected on (validation); the lite recipes select on it too


class TuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str | None  # the named recipe the base config came from (None: a config file or dict)
    base: dict[str, Any]  # the base config tree (data.path included), as load_config(base=...) takes it
    space: dict[str, dict]  # SearchSpace.describe(), for people and for a resume's consistency
    facts: dict[str, Any]  # the base model's ModelFacts, so a resume does not rebuild the model
    budget: str  # as given (`20m`)
    budget_s: float = Field(gt=0)
    seed: int = 0
    metric: str = DEFAULT_METRIC
    max_trials: int | None = Field(None, ge=1)
    spent_s: float = Field(0.0, ge=0)  # budget used by this search so far, over every run of it

    def save(self, tune_dir: Path) -> Path:
        return write_json_atomic(Path(tune_dir) / SETTINGS_FILE, json.loads(self.model_dump_json()))

    @classmethod
    def load(cls, tune_dir: Path) -> "TuneSettings":
        path = Path(tune_dir) / SETTINGS_FILE
        if not path.is_file():
            raise UsageError(f"--resume {tune_dir}: no {SETTINGS_FILE} there; is it a cliptune tune directory?")
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as err:
            raise UsageError(f"{path}: not a valid {SETTINGS_FILE}: {err}") from None
