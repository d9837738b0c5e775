"""Which parameters train: freeze a tower's trunk, optionally leaving its last N blocks trainable.

The result is a `FreezePlan`: for each tower, `k` = how many trunk blocks at the end still train. Everything before
them (stem and the first n_blocks − k blocks) is frozen and kept in eval mode, so BatchNorm statistics and dropout
of a frozen CNN stay locked. Heads and the logit scale always train. Because the frozen part is a prefix, its output
can be cached (see `train/feature_cache.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cliptune.models.base import DualEncoder

SIDES = ("image", "text")


@dataclass
class FreezePlan:
    k: dict[str, int]  # trainable trunk blocks at the end of each tower
    n_blocks: dict[str, int]

    def frozen_prefix(self, side: str) -> bool:
        """True when some leading part of the tower is frozen (so its output can be cached)."""
        return self.k[side] < self.n_blocks[side]


def plan_freeze(model: DualEncoder, freeze: str = "none", unfreeze_last_n: dict[str, int] | None = None) -> FreezePlan:
    unfreeze_last_n = unfreeze_last_n or {}
    frozen_sides = {"none": (), "image": ("image",), "text": ("text",), "both": SIDES}[freeze]
    k, n_blocks = {}, {}
    for side in SIDES:
        n = model.tower(side).n_blocks
        n_blocks[side] = n
        k[side] = min(n, max(0, int(unfreeze_last_n.get(side, 0)))) if side in frozen_sides else n
    return FreezePlan(k=k, n_blocks=n_blocks)


def _frozen_modules(model: DualEncoder, plan: FreezePlan) -> list[nn.Module]:
    mods: list[nn.Module] = []
    for side in SIDES:
        tower = model.tower(side)
        if plan.frozen_prefix(side):
            mods += tower.stem_modules()
            mods += tower.trunk_blocks()[: plan.n_blocks[side] - plan.k[side]]
    return mods


def apply_freeze(model: DualEncoder, plan: FreezePlan) -> None:
    """Set requires_grad according to the plan (everything else trains)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in _frozen_modules(model, plan):
        for p in module.parameters():
            p.requires_grad_(False)


def set_train_mode(model: DualEncoder, plan: FreezePlan, training: bool = True) -> None:
    """model.train(training), but frozen modules stay in eval mode (locked BatchNorm statistics, no dropout)."""
    model.train(training)
    if training:
        for module in _frozen_modules(model, plan):
            module.eval()
