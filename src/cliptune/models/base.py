"""The DualEncoder contract every backend implements, so the trainer, objectives and evaluation never change.

A dual encoder is two towers (image, text) that each map their input to a vector in one shared space, plus a
learnable logit scale (CLIP, Radford et al. 2021) and, for sigmoid-loss models, a logit bias (SigLIP, Zhai et al. 2023).

Each tower is a stack of trunk blocks followed by pooling and a projection head. A tower can be cut after any block:
`prefix(inputs, k)` runs everything except the last `k` blocks and `suffix(features, k)` runs the rest. When the
prefix is frozen and sees no augmentation its output never changes, so the trainer computes it once and caches it
(`train/feature_cache.py`); every step then runs only the trainable suffix. k = 0 means "only the head trains".
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

Features = dict[str, torch.Tensor]  # batch-first tensors, so a cache can store per-sample slices


class Tower(nn.Module, ABC):
    """One side of a dual encoder, cuttable after any trunk block."""

    feature_version = 1  # bump when prefix() changes what it returns, so cached features are recomputed

    @abstractmethod
    def trunk_blocks(self) -> list[nn.Module]:
        """The ordered blocks of the backbone; `unfreeze_last_n` counts from the end of this list."""

    @abstractmethod
    def head_modules(self) -> list[nn.Module]:
        """Modules after the trunk that carry parameters (final norm, projection head)."""

    @abstractmethod
    def prefix(self, inputs: Features, k: int) -> Features:
        """Run the tower up to (not including) its last `k` trunk blocks."""

    @abstractmethod
    def suffix(self, features: Features, k: int) -> torch.Tensor:
        """Run the last `k` trunk blocks, pooling and the head; returns unnormalised embeddings."""

    def forward(self, inputs: Features) -> torch.Tensor:
        return self.suffix(self.prefix(inputs, 0), 0)

    def trim(self, features: Features) -> Features:
        """Cached prefix features of one batch with what that batch does not need dropped (e.g. padding past its
        longest caption); `suffix` must give the same output. Cached text is padded to the longest caption of the
        whole split, so a batch of short captions would otherwise pay for the longest one."""
        return features

    def pool_prefix(self, features: Features, k: int) -> Features | None:
        """`prefix(x, 0)` from `prefix(x, k)`: run the last `k` trunk blocks and the pooling, not the head.

        Optional: it turns features cached at a run's freeze boundary into the k = 0 features a head-only fit needs
        without a second pass over the inputs. None means the tower does not provide it (run prefix(x, 0) instead).
        """
        return features if k == 0 else None

    @property
    def n_blocks(self) -> int:
        return len(self.trunk_blocks())

    def stem_modules(self) -> list[nn.Module]:
        """Parameter-carrying modules before the first trunk block (embeddings, stem conv); frozen with block 0."""
        return []


class DualEncoder(nn.Module, ABC):
    """Image tower + text tower + logit scale (+ optional logit bias), with the backend's own transform/tokenizer."""

    backend: str = "base"

    def __init__(
        self,
        image_tower: Tower,
        text_tower: Tower,
        embed_dim: int,
        logit_scale: float = 1 / 0.07,
        logit_bias: float | None = None,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.embed_dim = embed_dim
        self.max_logit_scale = max_logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale), dtype=torch.float32))
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))
        self.spec = self.backend

    # ---- inputs -------------------------------------------------------------------------------------------------
    @abstractmethod
    def image_transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        """PIL image → normalised CHW tensor at the tower's input size (eval transform unless `train`)."""

    @abstractmethod
    def tokenize(self, texts: list[str], pad_to_max: bool = False) -> Features:
        """Captions → token tensors; `pad_to_max` pads to the context length so cached features stack."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum number of text tokens the text tower accepts."""

    @property
    def image_size(self) -> int:
        return int(getattr(self, "_image_size", 224))

    # ---- encoding -----------------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        emb = self.image_tower({"pixel_values": pixel_values})
        return nn.functional.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, tokens: Features, normalize: bool = True) -> torch.Tensor:
        emb = self.text_tower(tokens)
        return nn.functional.normalize(emb, dim=-1) if normalize else emb

    def scale(self) -> torch.Tensor:
        """Temperature-inverse as used in the loss: exp(logit_scale), clamped as CLIP does (max 100)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def tower(self, side: str) -> Tower:
        return {"image": self.image_tower, "text": self.text_tower}[side]

    # ---- persistence --------------------------------------------------------------------------------------------
    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Export in the backend's native format (safetensors weights), loadable by `cliptune` by path."""

    def describe(self) -> dict:
        n_params = sum(p.numel() for p in self.parameters())
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"spec": self.spec, "backend": self.backend, "embed_dim": self.embed_dim, "params": n_params,
                "trainable_params": n_train, "image_size": self.image_size, "context_length": self.context_length}
