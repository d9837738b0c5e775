"""Towers over the modules of a transformers CLIP or SigLIP model, cuttable between any two encoder layers.

They hold the very modules of the wrapped `CLIPModel`/`SiglipModel` (no copies), so training a tower trains the
model that `save_pretrained` writes. Each step reproduces transformers' own forward (same calls, same order, same
attention mask), so `prefix` then `suffix` equals `get_image_features`/`get_text_features` bit for bit for every cut.

What differs between families is only the ends: CLIP has a pre-norm in vision, pools the class token (vision) or the
first end-of-text token (text, causal mask) and projects with a bias-free linear; SigLIP pools vision with an
attention-pooling head and text with the last position (no causal mask).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from cliptune.models.base import Features, Tower


class _LayerStackTower(Tower):
    """Shared cut logic: stem → `layers` → head; `k` counts layers from the end."""

    layers: nn.ModuleList

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def _cut(self, k: int) -> int:
        n = len(self.layers)
        if not 0 <= k <= n:
            raise ValueError(f"cut k={k} outside 0..{n} (this tower has {n} trunk blocks)")
        return n - k

    def _run_layers(self, hidden: torch.Tensor, layers, mask, **kwargs) -> torch.Tensor:
        for layer in layers:
            hidden = layer(hidden, mask, **kwargs)
        return hidden


def _with_params(*modules: nn.Module | None) -> list[nn.Module]:
    return [m for m in modules if m is not None and any(True for _ in m.parameters())]


# ---- vision -------------------------------------------------------------------------------------------------------
class HFVisionTower(_LayerStackTower):
    """embeddings (+ pre-norm) → encoder layers → family-specific pooling and projection."""

    def __init__(self, vision_model: nn.Module, pre_norm: nn.Module | None, post_norm: nn.Module, head: nn.Module):
        super().__init__()
        self.embeddings = vision_model.embeddings
        self.pre_norm = pre_norm if pre_norm is not None else nn.Identity()
        self.layers = vision_model.encoder.layers
        self.post_norm = post_norm
        self.head = head

    def stem_modules(self) -> list[nn.Module]:
        return _with_params(self.embeddings, self.pre_norm)

    def head_modules(self) -> list[nn.Module]:
        return _with_params(self.post_norm, self.head)

    def prefix(self, inputs: Features, k: int) -> Features:
        cut = self._cut(k)
        hidden = self.pre_norm(self.embeddings(inputs["pixel_values"]))
        return {"hidden": self._run_layers(hidden, self.layers[:cut], None)}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        cut = self._cut(k)
        hidden = self._run_layers(features["hidden"], self.layers[cut:], None)
        return self.pool(hidden)

    @abstractmethod
    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """One vector per image from the last hidden states (the family's own rule)."""


class ClipVisionTower(HFVisionTower):
    """CLIP: LayerNorm of the class token, then `visual_projection`."""

    def __init__(self, model: nn.Module):
        vm = model.vision_model
        super().__init__(vm, vm.pre_layrnorm, vm.post_layernorm, model.visual_projection)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.post_norm(hidden[:, 0, :]))


class SiglipVisionTower(HFVisionTower):
    """SigLIP: LayerNorm of every token, then the multi-head attention-pooling head (its output is the embedding)."""

    def __init__(self, model: nn.Module):
        vm = model.vision_model
        if not getattr(vm, "use_head", True):
            raise ValueError("SigLIP vision model without a pooling head has no image embedding")
        super().__init__(vm, None, vm.post_layernorm, vm.head)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.post_norm(hidden))


# ---- text ---------------------------------------------------------------------------------------------------------
class HFTextTower(_LayerStackTower):
    """embeddings → encoder layers (family-specific attention mask) → final norm → pooling → projection.

    Features carry the 2-D padding mask and the token ids rather than the 4-D attention mask, so they stay
    batch-first and cacheable; the mask is rebuilt from them exactly as transformers builds it.
    """

    layer_kwargs: dict = {}

    def __init__(self, text_model: nn.Module, head: nn.Module):
        super().__init__()
        self.config = text_model.config
        self.embeddings = text_model.embeddings
        self.layers = text_model.encoder.layers
        self.final_norm = text_model.final_layer_norm
        self.head = head

    def stem_modules(self) -> list[nn.Module]:
        return _with_params(self.embeddings)

    def head_modules(self) -> list[nn.Module]:
        return _with_params(self.final_norm, self.head)

    @abstractmethod
    def attention_mask(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None):
        """The attention mask the family's layers expect (CLIP: causal + padding; SigLIP: none)."""

    @abstractmethod
    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """One vector per caption from the last hidden states (CLIP: the EOS token; SigLIP: the last one)."""

    def _padding_mask(self, tokens: Features) -> torch.Tensor:
        mask = tokens.get("attention_mask")
        return torch.ones_like(tokens["input_ids"]) if mask is None else mask

    def prefix(self, inputs: Features, k: int) -> Features:
        cut = self._cut(k)
        input_ids = inputs["input_ids"]
        padding = self._padding_mask(inputs)
        hidden = self.embeddings(input_ids=input_ids)
        mask = self.attention_mask(hidden, padding)
        hidden = self._run_layers(hidden, self.layers[:cut], mask, **self.layer_kwargs)
        return {"hidden": hidden, "attention_mask": padding, "input_ids": input_ids}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        cut = self._cut(k)
        hidden = features["hidden"]
        mask = self.attention_mask(hidden, self._padding_mask(features))
        hidden = self._run_layers(hidden, self.layers[cut:], mask, **self.layer_kwargs)
        return self.head(self.pool(self.final_norm(hidden), features["input_ids"]))


class ClipTextTower(HFTextTower):
    """CLIP: causal + padding mask; pools the first end-of-text token (the highest id for pre-2023 configs)."""

    layer_kwargs = {"is_causal": True}

    def __init__(self, model: nn.Module):
        super().__init__(model.text_model, model.text_projection)
        self.eos_token_id = model.text_model.eos_token_id

    def attention_mask(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None):
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=padding_mask, cache=None)

    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.to(dtype=torch.int, device=hidden.device)
        # transformers' rule: configs saved before the eos_token_id fix say 2 and rely on EOS being the largest id.
        position = ids.argmax(dim=-1) if self.eos_token_id == 2 else (ids == self.eos_token_id).int().argmax(dim=-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), position]


class SiglipTextTower(HFTextTower):
    """SigLIP: bidirectional attention over all positions (trained without a padding mask); pools the last one."""

    def __init__(self, model: nn.Module):
        super().__init__(model.text_model, model.text_model.head)

    def attention_mask(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None):
        # SigLIP's checkpoints are trained on max-length padded text with no mask, and its reference usage passes
        # none; the padding mask is kept in the features but deliberately not applied.
        return None

    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return hidden[:, -1, :]
