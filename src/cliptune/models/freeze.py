"""Which parameters train: freeze a tower's trunk, optionally leaving its last N blocks trainable.

The result is a `FreezePlan`: for each tower, `k` = how many trunk blocks at the end still train. Everything before
them (stem and the first n_blocks − k blocks) is frozen and kept in eval mode, so BatchNorm statistics and dropout
of a frozen CNN stay locked. Because the frozen part is a prefix, its output can be cached (`train/feature_cache.py`).

Heads and the logit scale train unless `heads_frozen`. With LoRA adapters in the model (`models/lora.py`),
`adapters_only` holds: inside the trainable blocks only the adapter weights train, and a tower's cut moves down to
its first adapted block, so a tower without adapters is frozen whole and cached.

`plan_from_config(model, cfg.model)` is the one entry point for a run: presets, `vision_layers_frozen`,
`freeze_heads`, the backend's default-frozen tower and LoRA all end up in the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cliptune.models.base import DualEncoder
from cliptune.models.presets import resolve

SIDES = ("image", "text")
ADAPTER_MARK = "lora_"  # peft names every LoRA parameter lora_A/lora_B/lora_embedding_*/lora_magnitude_*


@dataclass
class FreezePlan:
    k: dict[str, int]  # trainable trunk blocks at the end of each tower
    n_blocks: dict[str, int]
    heads_frozen: bool = False  # projection heads (and the towers' final norms) frozen too
    adapters_only: bool = False  # LoRA: in trainable blocks only adapter weights train

    def frozen_prefix(self, side: str) -> bool:
        """True when some leading part of the tower is frozen (so its output can be cached)."""
        return self.k[side] < self.n_blocks[side]


def plan_freeze(model: DualEncoder, freeze: str = "none", unfreeze_last_n: dict[str, int] | None = None,
                vision_layers_frozen: int | None = None, freeze_heads: bool = False) -> FreezePlan:
    """`freeze` sides keep only `unfreeze_last_n[side]` blocks trainable; `vision_layers_frozen` (when set) freezes
    exactly the first N image blocks instead."""
    unfreeze_last_n = unfreeze_last_n or {}
    frozen_sides = {"none": (), "image": ("image",), "text": ("text",), "both": SIDES}[freeze]
    k, n_blocks = {}, {}
    for side in SIDES:
        n = model.tower(side).n_blocks
        n_blocks[side] = n
        k[side] = min(n, max(0, int(unfreeze_last_n.get(side, 0)))) if side in frozen_sides else n
    if vision_layers_frozen is not None:
        k["image"] = max(0, n_blocks["image"] - max(0, int(vision_layers_frozen)))
    adapters = has_adapters(model)
    if adapters:
        for side in SIDES:  # blocks before the first adapted one have nothing to train: move the cut there
            k[side] = min(k[side], n_blocks[side] - _first_adapted_block(model, side))
    return FreezePlan(k=k, n_blocks=n_blocks, heads_frozen=freeze_heads, adapters_only=adapters)


def plan_from_config(model: DualEncoder, model_cfg) -> FreezePlan:
    """The plan for a `ModelCfg`: preset or explicit settings, plus the backend's default-frozen tower."""
    settings = resolve(getattr(model_cfg, "preset", None), model_cfg.freeze,
                       getattr(model_cfg, "vision_layers_frozen", None),
                       backend_default=getattr(model, "default_freeze", "none"))
    unfreeze = model_cfg.unfreeze_last_n
    unfreeze = unfreeze.model_dump() if hasattr(unfreeze, "model_dump") else dict(unfreeze or {})
    return plan_freeze(model, settings.freeze, unfreeze, settings.vision_layers_frozen,
                       bool(getattr(model_cfg, "freeze_heads", False)))


# ---- adapters -------------------------------------------------------------------------------------------------------
def is_adapter_param(name: str) -> bool:
    return ADAPTER_MARK in name


def has_adapters(model: nn.Module) -> bool:
    return any(is_adapter_param(name) for name, _ in model.named_parameters())


def _first_adapted_block(model: DualEncoder, side: str) -> int:
    blocks = model.tower(side).trunk_blocks()
    for i, block in enumerate(blocks):
        if any(is_adapter_param(name) for name, _ in block.named_parameters()):
            return i
    return len(blocks)


# ---- applying a plan ------------------------------------------------------------------------------------------------
def _frozen_modules(model: DualEncoder, plan: FreezePlan) -> list[nn.Module]:
    mods: list[nn.Module] = []
    for side in SIDES:
        tower = model.tower(side)
        if plan.frozen_prefix(side) or plan.adapters_only:
            mods += tower.stem_modules()
        if plan.frozen_prefix(side):
            mods += tower.trunk_blocks()[: plan.n_blocks[side] - plan.k[side]]
        if plan.heads_frozen:
            mods += tower.head_modules()
    return mods


def _base_weights_of_trainable_blocks(model: DualEncoder, plan: FreezePlan) -> list[nn.Parameter]:
    params = []
    for side in SIDES:
        for block in model.tower(side).trunk_blocks()[plan.n_blocks[side] - plan.k[side]:]:
            params += [p for name, p in block.named_parameters() if not is_adapter_param(name)]
    return params


def apply_freeze(model: DualEncoder, plan: FreezePlan) -> None:
    """Set requires_grad according to the plan (everything else trains)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in _frozen_modules(model, plan):
        for p in module.parameters():
            p.requires_grad_(False)
    if plan.adapters_only:
        for p in _base_weights_of_trainable_blocks(model, plan):
            p.requires_grad_(False)


def set_train_mode(model: DualEncoder, plan: FreezePlan, training: bool = True) -> None:
    """model.train(training), but frozen modules stay in eval mode (locked BatchNorm statistics, no dropout).

    A BatchNorm whose weights are all frozen keeps its statistics too, wherever it is (e.g. inside a LoRA-adapted
    block), so a frozen normalisation never drifts from the weights it was trained with.
    """
    model.train(training)
    if training:
        for module in _frozen_modules(model, plan):
            module.eval()
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
                module.eval()
