"""The plan of a run, shown before it starts: what trains in each tower, at which size, for how long, and whether
the frozen part is computed once (cached) — so a user sees what a recipe chose, and why, before paying for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cliptune.config import Config
from cliptune.models.freeze import SIDES, FreezePlan


@dataclass(frozen=True)
class TowerPlan:
    trainable_blocks: int  # trunk blocks at the end of the tower that train
    n_blocks: int
    cached: bool  # the frozen part's output is computed once and cached (not recomputed every step)

    def describe(self) -> str:
        if self.trainable_blocks == 0:
            what = "frozen"
        elif self.trainable_blocks >= self.n_blocks:
            what = f"all {self.n_blocks} blocks train"
        else:
            what = f"last {self.trainable_blocks} of {self.n_blocks} blocks train"
        return what + (" (frozen part cached)" if self.cached else "")


@dataclass(frozen=True)
class RunPlan:
    recipe: str | None
    reason: str
    model: str
    image: TowerPlan
    text: TowerPlan
    image_size: int
    epochs: int
    max_steps: int | None
    steps: int  # optimisation steps at most (early stopping may end sooner)
    batch_size: int
    lr: float
    head_lr: float
    objective: str
    augment: bool
    select_on: str

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        recipe = f"recipe {self.recipe} ({self.reason})" if self.recipe else f"no recipe ({self.reason})"
        return [recipe,
                f"  {self.model} at {self.image_size} px; image tower: {self.image.describe()}; "
                f"text tower: {self.text.describe()}",
                f"  {self.epochs} epochs ≤ {self.steps} steps of batch {self.batch_size}, lr {self.lr:g}, "
                f"heads lr {self.head_lr:g}, {self.objective}, augmentation {'on' if self.augment else 'off'}, "
                f"best checkpoint by val {self.select_on}"]


def tower_plan(cfg: Config, plan: FreezePlan, side: str) -> TowerPlan:
    cached = cfg.train.feature_cache and plan.frozen_prefix(side) and not cfg.augment.enabled_for(side)
    return TowerPlan(plan.k[side], plan.n_blocks[side], bool(cached))


def run_plan(cfg: Config, model, plan: FreezePlan, n_train: int, recipe: str | None, reason: str) -> RunPlan:
    t = cfg.train
    spe = max(1, max(1, n_train // t.batch_size) // t.accum_steps)
    towers = {side: tower_plan(cfg, plan, side) for side in SIDES}
    return RunPlan(recipe=recipe, reason=reason, model=cfg.model.spec, image=towers["image"], text=towers["text"],
                   image_size=model.image_size, epochs=t.epochs, max_steps=t.max_steps,
                   steps=t.max_steps or spe * t.epochs, batch_size=t.batch_size, lr=t.lr, head_lr=t.head_lr or t.lr,
                   objective=cfg.loss.type, augment=cfg.augment.enabled, select_on=t.early_stop_metric)
