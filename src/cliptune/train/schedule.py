"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio` × base lr (Loshchilov & Hutter 2017)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    warmup_steps = min(warmup_steps, max(0, total_steps // 2))
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio))
