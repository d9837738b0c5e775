"""The mutable state of a training run (as open_clip's loop variables or HF's `TrainerState`): model, optimiser,
scheduler, scaler, the position in the data and the early-stopping record. A checkpoint saves exactly this."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cliptune.train import checkpoint as ckpt
from cliptune.train.early_stop import EarlyStopping


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    stopper: EarlyStopping
    total_steps: int  # what the schedule spans
    limit: int  # where this process stops (total_steps, or train.stop_at_step)
    step: int = 0  # optimiser steps done
    epoch: int = 0
    in_epoch: int = 0  # optimiser steps done in `epoch`
    epoch_done: bool = False  # the last step ended its epoch
    before: dict | None = None  # the baseline metrics (kept in checkpoints so a resumed run reports them)
    should_stop: bool = False  # set by a callback to end the loop after this step
    stopped_early: bool = False  # early stopping ended the run
    resumed_from: int | None = None  # the step a resumed run started at
    mined: torch.Tensor | None = None  # hard negatives in force (re-mined by a callback, never checkpointed)
    test_ranks: dict = field(default_factory=dict)  # "before"/"after" → per-query test ranks (never checkpointed)

    def advance(self, epoch_done: bool) -> None:
        self.step += 1
        self.in_epoch += 1
        self.epoch_done = epoch_done

    def position(self) -> tuple[int, int]:
        """(epoch, steps into it) a checkpoint records: after an epoch's last step, the start of the next."""
        return (self.epoch + 1, 0) if self.epoch_done else (self.epoch, self.in_epoch)

    def record(self, epoch: int | None = None, in_epoch: int | None = None) -> dict:
        """state.json of a checkpoint at this step."""
        if epoch is None:
            epoch, in_epoch = self.position()
        return {"step": self.step, "epoch": epoch, "in_epoch": in_epoch, "before": self.before,
                "early_stop": self.stopper.state(), "total_steps": self.total_steps}

    def save(self, checkpoints, links: tuple[str, ...] = ("last",), epoch: int | None = None,
             in_epoch: int | None = None):
        """Write a resumable checkpoint of this state (main process only)."""
        return ckpt.save_checkpoint(checkpoints, self.model, self.optimizer, self.scheduler,
                                    self.record(epoch, in_epoch), links=links, scaler=self.scaler)

    def restore(self, path, steps_per_epoch: int | None) -> dict:
        """Load a checkpoint into the model, optimiser, scheduler, scaler and RNGs; move to its position."""
        saved = ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, scaler=self.scaler)
        self.step, self.epoch, self.before = saved["step"], saved["epoch"], saved.get("before")
        # optimiser steps into the epoch (checkpoints without it are from indexed runs: the step says)
        self.in_epoch = saved["in_epoch"] if "in_epoch" in saved else self.step - self.epoch * steps_per_epoch
        self.stopper.load_state(saved.get("early_stop", {}))
        self.resumed_from = self.step
        return saved
