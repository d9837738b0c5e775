"""AdamW with the parameter groups CLIP fine-tuning needs.

No weight decay on norms, biases, embeddings-like scalars and the logit scale/bias (decaying the temperature pulls it
towards 1 and undoes training), as in open_clip's trainer. Heads and the logit scale may get their own learning rate,
because freshly initialised projections need a larger step than pretrained backbones.

Optional layer-wise learning-rate decay (BEiT, Bao et al. 2021; used for CLIP fine-tuning by FLYP/FD-CLIP): trunk
block i of a tower with n blocks gets lr × decay^(n − i), its stem lr × decay^(n + 1), so the top block moves most
and early, general features least. Heads are outside the decay (head_lr or lr).
"""

from __future__ import annotations

import torch
from torch import nn

from cliptune.models.base import DualEncoder

SIDES = ("image", "text")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "logit_" in name or "norm" in name.lower() or ".bn" in name or name.endswith(".bias")


def _param_ids(modules) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def layer_scales(model: DualEncoder, decay: float) -> dict[int, float]:
    """Parameter id → lr multiplier from its depth below the top of its tower (heads and unknown parts: none)."""
    scales: dict[int, float] = {}
    for side in SIDES:
        tower = model.tower(side)
        blocks = tower.trunk_blocks()
        n = len(blocks)
        for pid in _param_ids(tower.stem_modules()):
            scales[pid] = decay ** (n + 1)
        for i, block in enumerate(blocks):
            for pid in _param_ids([block]):
                scales[pid] = decay ** (n - i)
    return scales


def build_optimizer(model: DualEncoder, lr: float, weight_decay: float, head_lr: float | None = None,
                    layer_decay: float | None = None) -> torch.optim.AdamW:
    head_ids = _param_ids(m for side in SIDES for m in model.tower(side).head_modules())
    scales = layer_scales(model, layer_decay) if layer_decay is not None else {}
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith("logit_") or id(param) in head_ids
        scale = 1.0 if is_head else scales.get(id(param), 1.0)
        groups.setdefault((is_head, _no_decay(name, param), scale), []).append(param)
    param_groups = []
    for (is_head, no_decay, scale), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        base = (head_lr or lr) if is_head else lr
        param_groups.append({
            "params": params,
            "lr": base * scale,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{'head' if is_head else 'backbone'}{'/no_decay' if no_decay else ''}"
                    f"{f'/lr_x{scale:.4g}' if scale != 1.0 else ''}",
        })
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
