"""AdamW with the parameter groups CLIP fine-tuning needs.

No weight decay on norms, biases, embeddings-like scalars and the logit scale/bias (decaying the temperature pulls it
towards 1 and undoes training), as in open_clip's trainer. Heads and the logit scale may get their own learning rate,
because freshly initialised projections need a larger step than pretrained backbones.
"""

from __future__ import annotations

import torch
from torch import nn

from cliptune.models.base import DualEncoder


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "logit_" in name or "norm" in name.lower() or ".bn" in name or name.endswith(".bias")


def build_optimizer(model: DualEncoder, lr: float, weight_decay: float, head_lr: float | None = None) -> torch.optim.AdamW:
    head_ids = {id(p) for side in ("image", "text") for m in model.tower(side).head_modules() for p in m.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith("logit_") or id(param) in head_ids
        groups.setdefault((is_head, _no_decay(name, param)), []).append(param)
    param_groups = []
    for (is_head, no_decay), params in sorted(groups.items()):
        param_groups.append({
            "params": params,
            "lr": (head_lr or lr) if is_head else lr,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{'head' if is_head else 'backbone'}{'/no_decay' if no_decay else ''}",
        })
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
