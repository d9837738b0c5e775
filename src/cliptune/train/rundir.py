"""The run directory contract (DESIGN.md): config.yaml, checkpoints/{last,best}, model/, history, metrics, report."""

from __future__ import annotations

import shutil
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
        run = cls(path)
        if path.exists() and any(path.iterdir()) and not exist_ok:
            if not run.unstarted():
                raise UsageError(f"run directory {path} already exists; pick another train.name or use "
                                 f"--resume {path}")
            run.clear()  # a run that ended before its first checkpoint: nothing in it is worth keeping
        path.mkdir(parents=True, exist_ok=True)
        return run

    def unstarted(self) -> bool:
        """A cliptune run directory with nothing to resume or keep: no checkpoint, no model, no metrics, and no
        live process training it (a run that failed or was killed before its first checkpoint)."""
        from cliptune.train.lock import RunLock

        lock = RunLock(self.path)
        if lock.path.exists() and not lock.stale(lock.holder()):
            return False
        return self.config_file.is_file() and not (self.has_checkpoint() or self.model_dir.exists()
                                                   or self.metrics_file.exists())

    def clear(self) -> None:
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

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
