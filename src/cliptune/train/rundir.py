"""The run directory contract (DESIGN.md): config.yaml, checkpoints/{last,best}, model/, history, metrics, report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cliptune.errors import UsageError


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, output_dir: str | Path, name: str | None, exist_ok: bool = False) -> "RunDir":
        name = name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
        path = Path(output_dir) / name
        if path.exists() and any(path.iterdir()) and not exist_ok:
            raise UsageError(f"run directory {path} already exists; pick another train.name or use --resume {path}")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def has_checkpoint(self) -> bool:
        return (self.checkpoints / "last" / "state.json").is_file()
