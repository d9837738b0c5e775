"""Fit a dual encoder's projection heads and logit scale with InfoNCE on cached pooled features.

Each epoch draws one caption per image, so an image with several captions is seen with all of them over the run.
(Drawings that share a caption, 'card' or 'folder', need no special targets: identical captions have identical
embeddings, so spreading a caption's target over its images would give exactly the plain loss.)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cliptune.models.base import DualEncoder
from cliptune.pretrain.features import PairFeatures


@dataclass(frozen=True)
class HeadRecipe:
    """Everything that determines the fitted heads (written next to them)."""

    epochs: int = 30
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def head_parameters(model: DualEncoder) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed): head weight matrices; biases, norms and the logit scale."""
    decay, no_decay = [], []
    for module in (model.image_tower.proj, model.text_tower.proj):
        for p in module.parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay + [model.logit_scale]


def _pair_loss(model: DualEncoder, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of (image, caption) pairs, row i matching row i."""
    zi = nn.functional.normalize(model.image_tower.suffix({"pooled": img}, 0), dim=-1)
    zt = nn.functional.normalize(model.text_tower.suffix({"pooled": txt}, 0), dim=-1)
    logits = model.scale() * zt @ zi.T
    target = torch.arange(len(img))
    return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2


def _draw_captions(data: PairFeatures, gen: torch.Generator) -> torch.Tensor:
    """One caption row per image, uniformly among its captions."""
    order = torch.randperm(len(data.text_to_image), generator=gen)
    first = torch.full((data.n_images,), -1, dtype=torch.long)
    first[data.text_to_image[order].flip(0)] = order.flip(0)  # last write wins: the first in `order`
    return first


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit_heads(model: DualEncoder, data: PairFeatures, recipe: HeadRecipe, log=None) -> dict:
    """Train the heads and logit scale of `model` in place; returns per-epoch losses and the wall time."""
    gen = torch.Generator().manual_seed(recipe.seed)
    decay, no_decay = head_parameters(model)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    steps_per_epoch = math.ceil(data.n_images / recipe.batch_size)
    total, step, losses, started = recipe.epochs * steps_per_epoch, 0, [], time.perf_counter()
    model.train()
    for epoch in range(recipe.epochs):
        pick = _draw_captions(data, gen)
        images = torch.randperm(data.n_images, generator=gen)
        running = 0.0
        for start in range(0, data.n_images, recipe.batch_size):
            rows = images[start:start + recipe.batch_size]
            texts = pick[rows]
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, recipe.warmup_epochs * steps_per_epoch, recipe.lr)
            loss = _pair_loss(model, data.image[rows], data.text[texts])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(rows)
            step += 1
        losses.append(running / data.n_images)
        if log is not None:
            log(f"epoch {epoch + 1}/{recipe.epochs}: loss {losses[-1]:.4f}, scale {float(model.scale()):.1f}")
    model.eval()
    return {"losses": losses, "seconds": round(time.perf_counter() - started, 1)}


@torch.inference_mode()
def heldout_metrics(model: DualEncoder, data: PairFeatures) -> dict:
    """Retrieval metrics of the heads on held-out features (both directions, multi-positive)."""
    from cliptune.eval.retrieval import retrieval_metrics

    zi = nn.functional.normalize(model.image_tower.suffix({"pooled": data.image}, 0), dim=-1)
    zt = nn.functional.normalize(model.text_tower.suffix({"pooled": data.text}, 0), dim=-1)
    return retrieval_metrics(zi, zt, data.text_to_image)
