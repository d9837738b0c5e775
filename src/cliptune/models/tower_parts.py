"""Small pieces every cuttable tower needs: the cut index, bare-parameter groups and the "opaque" fallback tower.

Backbones keep some weights as bare `nn.Parameter`s (class token, positional embedding, projection matrix) rather
than modules. `Tower.stem_modules()`/`head_modules()` return modules, so `ParamGroup` presents such parameters as a
module without registering them anywhere new: state dicts keep exactly the backbone's own names.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cliptune.models.base import Features, Tower


def cut_index(k: int, n: int) -> int:
    """Index of the first trainable block when the last `k` of `n` blocks train (the contract's cut point)."""
    if not 0 <= k <= n:
        raise ValueError(f"cut k={k} outside 0..{n} (this tower has {n} trunk blocks)")
    return n - k


def trim_padding(features: Features) -> Features:
    """Drop the sequence positions past the batch's last real token (right padding, `attention_mask` 0). Exact for
    towers that mask padding in attention and pooling (mean-pooled BERT encoders); not for towers that pool a fixed
    position (SigLIP's last token)."""
    mask = features.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return features
    used = mask.bool().any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    if length == mask.shape[1]:
        return features
    return {k: v[:, :length] if v.dim() >= 2 and v.shape[1] == mask.shape[1] else v for k, v in features.items()}


class ParamGroup(nn.Module):
    """Bare parameters seen as one module (for freezing and optimiser groups); never registered in a model tree."""

    def __init__(self, *params: nn.Parameter | None):
        super().__init__()
        for i, p in enumerate(p for p in params if isinstance(p, nn.Parameter)):
            self.register_parameter(f"p{i}", p)


def with_params(*parts: nn.Module | nn.Parameter | None) -> list[nn.Module]:
    """The parts that carry parameters, bare parameters grouped into one `ParamGroup`."""
    modules = [m for m in parts if isinstance(m, nn.Module) and any(True for _ in m.parameters())]
    bare = [p for p in parts if isinstance(p, nn.Parameter)]
    return modules + ([ParamGroup(*bare)] if bare else [])


class OpaqueTower(Tower):
    """A tower whose backbone cannot be cut: one trunk block (the whole backbone), then the head.

    It keeps the contract for any module: `k = 0` caches the backbone's output, `k = 1` trains it. Used for
    backbones without a known block structure, so every model still trains, freezes and caches.
    """

    def __init__(self, backbone: nn.Module, run: Callable[[nn.Module, Features], torch.Tensor],
                 head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self._run = run

    def trunk_blocks(self) -> list[nn.Module]:
        return [self.backbone]

    def head_modules(self) -> list[nn.Module]:
        return with_params(self.head)

    def prefix(self, inputs: Features, k: int) -> Features:
        cut_index(k, 1)
        return {"pooled": self._run(self.backbone, inputs)} if k == 0 else dict(inputs)

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        cut_index(k, 1)
        pooled = features["pooled"] if k == 0 else self._run(self.backbone, features)
        return self.head(pooled)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens (sentence-transformers' pooling for most of its models, all-MiniLM-L6-v2 included)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def run_bert_layers(bert: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int,
                    stop: int) -> torch.Tensor:
    """Run `bert.encoder.layer[start:stop]` with the padding mask transformers itself would build.

    The mask comes from `transformers.masking_utils.create_bidirectional_mask`, the public helper BERT's own forward
    uses, so it matches the attention implementation in the config (eager, sdpa, …). `tests/test_lite.py` compares
    every cut against the library's full forward, so a change upstream fails there, not deep in a run.
    """
    if start == stop:
        return hidden
    from transformers.masking_utils import create_bidirectional_mask

    mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for layer in bert.encoder.layer[start:stop]:
        hidden = layer(hidden, mask)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden

