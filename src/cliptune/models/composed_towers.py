"""Towers of a composed dual encoder: any image backbone (timm/torchvision) and any Hugging Face text encoder.

Image: backbone blocks → the backbone's own pooling or attention pooling over its feature map → projection head.
Text: embeddings → transformer layers → masked mean pooling (as sentence-transformers pools) → projection head.
Both cut between blocks like every Tower; when the frozen part ends in a parameter-free pooling, the cached feature
is the pooled vector rather than the whole feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from cliptune.models.backbones import Backbone
from cliptune.models.base import Features, Tower
from cliptune.models.pooling import AttentionPool
from cliptune.models.tower_parts import cut_index, mean_pool, run_bert_layers, trim_padding, with_params


class BackboneTower(Tower):
    """Image tower over a `Backbone`; `attention_pool` replaces the backbone's pooling by a learned one."""

    def __init__(self, backbone: Backbone, proj: nn.Module, attention_pool: bool = False):
        super().__init__()
        self.backbone = backbone
        self.attn_pool = AttentionPool(backbone.num_features) if attention_pool else None
        self.proj = proj

    def trunk_blocks(self) -> list[nn.Module]:
        return self.backbone.blocks()

    def stem_modules(self) -> list[nn.Module]:
        return with_params(*self.backbone.stem_parts())

    def head_modules(self) -> list[nn.Module]:
        return with_params(*self.backbone.head_parts(), self.attn_pool, self.proj)

    def _pooling_is_fixed(self) -> bool:
        """True when nothing between the last block and the head has weights: then a frozen trunk's pooled output
        is final and the cache stores one vector per image instead of the feature map."""
        return self.attn_pool is None and not with_params(*self.backbone.head_parts())

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.finish(x)
        return self.attn_pool(self.backbone.tokens(x)) if self.attn_pool is not None else self.backbone.pool(x)

    def prefix(self, inputs: Features, k: int) -> Features:
        n = self.n_blocks
        x = self.backbone.run(self.backbone.embed(inputs["pixel_values"]), 0, cut_index(k, n))
        if k == 0 and self._pooling_is_fixed():
            return {"pooled": self.backbone.pool(self.backbone.finish(x))}
        return {"hidden": x}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        n = self.n_blocks
        if "pooled" in features:
            return self.proj(features["pooled"])
        x = self.backbone.run(features["hidden"], cut_index(k, n), n)
        return self.proj(self._pool(x))


class HFEncoderTower(Tower):
    """A BERT-family encoder (embeddings + encoder.layer) cut between layers, mean pooled, projected."""

    def __init__(self, model: nn.Module, proj: nn.Module):
        super().__init__()
        self.model = model
        self.proj = proj

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layer)

    def stem_modules(self) -> list[nn.Module]:
        return [self.model.embeddings]

    def head_modules(self) -> list[nn.Module]:
        return [self.proj]

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return run_bert_layers(self.model, hidden, attention_mask, start, stop)

    def trim(self, features: Features) -> Features:
        return trim_padding(features)

    def prefix(self, inputs: Features, k: int) -> Features:
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        hidden = self.model.embeddings(input_ids=ids)
        hidden = self._run_layers(hidden, attn, 0, cut_index(k, self.n_blocks))
        if k == 0:  # the whole encoder is frozen: the sentence vector is all the head needs
            return {"pooled": mean_pool(hidden, attn)}
        return {"hidden": hidden, "attention_mask": attn}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        if k == 0:
            cut_index(k, self.n_blocks)
            return self.proj(features["pooled"])
        attn = features["attention_mask"]
        n = self.n_blocks
        hidden = self._run_layers(features["hidden"], attn, cut_index(k, n), n)
        return self.proj(mean_pool(hidden, attn))


def run_hf_encoder(model: nn.Module, inputs: Features) -> torch.Tensor:
    """The whole encoder, mean pooled: the single block of an `OpaqueTower` for encoders of other families."""
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return mean_pool(out.last_hidden_state, inputs["attention_mask"])


def cuttable_text_model(model: nn.Module) -> bool:
    """BERT-family encoders whose layers can be run one by one exactly as the model runs them."""
    return (getattr(model.config, "model_type", None) in CUTTABLE_TEXT_TYPES
            and hasattr(model, "_create_attention_masks") and hasattr(getattr(model, "encoder", None), "layer"))


CUTTABLE_TEXT_TYPES = {"bert", "roberta", "xlm-roberta", "camembert"}
