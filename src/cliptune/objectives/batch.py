"""The objective contract: a typed `TrainBatch` in, a dict of tensors out, and the capabilities an objective declares.

Every objective is called as

    objective(image_emb, text_emb, logit_scale, logit_bias=None, batch: TrainBatch | None = None) -> {"loss": ..., ...}

with L2-normalised embeddings whose row i on each side is a positive pair. Whatever else the loss needs arrives as
tensors in the `TrainBatch` (mined hard negatives already embedded, match labels, this process's rows), as in
sentence-transformers' losses: an objective never calls back into the trainer. What the trainer must provide is
declared up front in `Capabilities`, so the trainer asks once instead of probing with `hasattr`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class Capabilities:
    """What an objective needs from the trainer."""

    mined_negatives: bool = False  # mine captions per image (train/mining.py) and embed them into the batch
    labels: bool = False  # per-row 0/1 labels (the match task)
    adds_parameters: bool = False  # `attach(model)` adds or re-initialises model parameters before the optimiser


@dataclass
class TrainBatch:
    """One micro-batch as the objective sees it; every field is optional except the epoch."""

    epoch: int = 0
    image_index: torch.Tensor | None = None  # [B] dataset rows (indexed data only)
    caption_index: torch.Tensor | None = None  # [B] the caption each image shows
    labels: torch.Tensor | None = None  # [B] 0/1, 1 = the text fits the image (match task)
    negative_mask: torch.Tensor | None = None  # [B, B] bool: extra in-batch negatives of the match loss
    negatives: torch.Tensor | None = None  # [B, n] mined caption indices, −1 = none
    negative_emb: torch.Tensor | None = None  # [B, n, D] embeddings of `negatives` (with grad), zero where −1
    local_rows: tuple[int, int] | None = None  # open_clip's local_loss: this process's query rows

    @classmethod
    def coerce(cls, batch: "TrainBatch | dict | None") -> "TrainBatch":
        """A TrainBatch from the older dict form (kept for callers that built dicts). A dict holding an
        `encode_text` callable and `negatives` gets its `negative_emb` computed here, before the loss runs."""
        if batch is None:
            return cls()
        if isinstance(batch, TrainBatch):
            return batch
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in batch.items() if k in known})
        encode = batch.get("encode_text")
        if out.negative_emb is None and out.negatives is not None and callable(encode):
            out.negative_emb = embed_negatives(out.negatives, encode)
        return out


@runtime_checkable
class Objective(Protocol):
    capabilities: Capabilities

    def attach(self, model: nn.Module) -> None: ...

    def __call__(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | None,
                 logit_bias: torch.Tensor | None = None,
                 batch: TrainBatch | None = None) -> dict[str, torch.Tensor]: ...


class ObjectiveBase(nn.Module):
    """Base class of the built-in objectives: no capabilities and nothing to attach unless a subclass says so."""

    capabilities = Capabilities()

    def attach(self, model: nn.Module) -> None:
        """Runs once, after the model is on its device and before the optimiser is built (and before a resume
        loads a checkpoint): parameters an objective needs live on the model, so they are optimised, checkpointed
        and exported with it."""


def capabilities_of(objective: nn.Module) -> Capabilities:
    """The declared capabilities (a plain nn.Module loss declares none)."""
    return getattr(objective, "capabilities", None) or Capabilities()


def embed_negatives(negatives: torch.Tensor, encode_text: Callable[[torch.Tensor], torch.Tensor]
                    ) -> torch.Tensor | None:
    """[B, n, D] embeddings of mined caption indices (zeros where −1), or None when nothing was mined."""
    if negatives.numel() == 0:
        return None
    valid = negatives >= 0
    if not bool(valid.any()):
        return None
    found = encode_text(negatives[valid])
    emb = found.new_zeros((*negatives.shape, found.shape[-1]))
    emb[valid.to(emb.device)] = found
    return emb
