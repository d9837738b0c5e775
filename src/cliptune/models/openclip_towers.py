"""Towers over the modules of an open_clip model, cuttable between any two blocks.

They hold the very modules (and bare parameters) of the wrapped `CLIP`/`CustomTextCLIP`, so training a tower trains
the model that gets exported. Each tower reproduces open_clip 3.3's own forward step by step (`VisionTransformer.
forward`, `ModifiedResNet.forward`, `TimmModel.forward`, `CLIP.encode_text` / `TextTransformer.forward`, including
the causal/padding attention masks, non-batch-first stacks, the CoCa-style appended class token and every text
pooling mode), so `prefix` then `suffix` equals `encode_image`/`encode_text` for every cut.

Towers are picked by the class of the open_clip module (`VISION_TOWERS`, `TEXT_TOWERS`); a module of any other class
becomes an `OpaqueTower` (one block), so every open_clip model trains, only with a coarser cut.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cliptune.models.backbones import BACKBONE_FAMILIES, TimmWhole
from cliptune.models.base import Features, Tower
from cliptune.models.tower_parts import OpaqueTower, cut_index, with_params
from cliptune.utils.registry import Registry

VISION_TOWERS: Registry[Callable[[nn.Module], Tower]] = Registry("open_clip vision tower")
TEXT_TOWERS: Registry[Callable[[nn.Module], Tower]] = Registry("open_clip text tower")


def _run_resblocks(transformer: nn.Module, x: torch.Tensor, blocks, attn_mask=None) -> torch.Tensor:
    """Blocks of an open_clip `Transformer` on batch-first `x`, in the layout the stack was built for."""
    if not getattr(transformer, "batch_first", True):
        x = x.transpose(0, 1).contiguous()
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    if not getattr(transformer, "batch_first", True):
        x = x.transpose(0, 1)
    return x


# ---- vision ---------------------------------------------------------------------------------------------------------
# open_clip's VisionTransformer does these two steps in private methods; they are written here from its public
# attributes. tests/test_models_openclip.py compares every cut with open_clip's own `encode_image`, so an upstream
# change fails there as an assertion.
def _vit_tokens(v: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch embedding, class token, positional embedding, patch dropout, ln_pre: the input of the first block."""
    x = v.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
    return v.ln_pre(v.patch_dropout(x))


def _vit_global_pool(v: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if v.pool_type == "avg":
        return x[:, 1:].mean(dim=1)
    return x[:, 0] if v.pool_type == "tok" else x


def _vit_pool(v: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tower's pooled vector (before `proj`), for every pooling open_clip's VisionTransformer is built with."""
    if v.attn_pool is not None:
        if v.attn_pool_contrastive is not None:
            x = v.ln_post(x)
            tokens = v.attn_pool(x)
            return v.attn_pool_contrastive(x if v.attn_pool_type == "parallel" else tokens)
        return _vit_global_pool(v, v.ln_post(v.attn_pool(x)))
    if v.final_ln_after_pool:
        return v.ln_post(_vit_global_pool(v, x))
    return _vit_global_pool(v, v.ln_post(x))


@VISION_TOWERS.register("VisionTransformer")
class VisionTransformerTower(Tower):
    """conv1 + class/positional embedding + ln_pre | resblocks | pooling (+ attention pooler) + ln_post + proj."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def stem_modules(self) -> list[nn.Module]:
        v = self.visual
        return with_params(v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre)

    def head_modules(self) -> list[nn.Module]:
        v = self.visual
        return with_params(v.attn_pool, getattr(v, "attn_pool_contrastive", None), v.ln_post, v.proj)

    def prefix(self, inputs: Features, k: int) -> Features:
        v = self.visual
        x = _vit_tokens(v, inputs["pixel_values"])
        x = _run_resblocks(v.transformer, x, v.transformer.resblocks[: cut_index(k, self.n_blocks)])
        return {"hidden": x}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        v = self.visual
        x = _run_resblocks(v.transformer, features["hidden"], v.transformer.resblocks[cut_index(k, self.n_blocks):])
        pooled = _vit_pool(v, x)
        return pooled @ v.proj if v.proj is not None else pooled


@VISION_TOWERS.register("ModifiedResNet")
class ModifiedResNetTower(Tower):
    """OpenAI's ResNet: 3-conv stem | layer1..layer4 | attention pooling (which is also the projection)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def trunk_blocks(self) -> list[nn.Module]:
        v = self.visual
        return [v.layer1, v.layer2, v.layer3, v.layer4]

    def stem_modules(self) -> list[nn.Module]:
        v = self.visual
        return with_params(v.conv1, v.bn1, v.conv2, v.bn2, v.conv3, v.bn3)

    def head_modules(self) -> list[nn.Module]:
        return with_params(self.visual.attnpool)

    def prefix(self, inputs: Features, k: int) -> Features:
        x = self.visual.stem(inputs["pixel_values"])
        for layer in self.trunk_blocks()[: cut_index(k, self.n_blocks)]:
            x = layer(x)
        return {"hidden": x}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        x = features["hidden"]
        for layer in self.trunk_blocks()[cut_index(k, self.n_blocks):]:
            x = layer(x)
        return self.visual.attnpool(x)


@VISION_TOWERS.register("TimmModel")
class TimmModelTower(Tower):
    """open_clip's timm adapter: the timm trunk cut by its backbone family, then timm's head and open_clip's head."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        family = f"timm:{type(visual.trunk).__name__}"
        cls = BACKBONE_FAMILIES.get(family) if family in BACKBONE_FAMILIES else TimmWhole
        # Not registered: `visual` already owns the trunk; this is only the view that knows its parts.
        object.__setattr__(self, "_trunk", cls(visual.trunk))

    def trunk_blocks(self) -> list[nn.Module]:
        return self._trunk.blocks()

    def stem_modules(self) -> list[nn.Module]:
        return with_params(*self._trunk.stem_parts())

    def head_modules(self) -> list[nn.Module]:
        return with_params(*self._trunk.head_parts(), self.visual.head)

    def prefix(self, inputs: Features, k: int) -> Features:
        t = self._trunk
        return {"hidden": t.run(t.embed(inputs["pixel_values"]), 0, cut_index(k, self.n_blocks))}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        t, n = self._trunk, self.n_blocks
        x = t.finish(t.run(features["hidden"], cut_index(k, n), n))
        return self.visual.head(self.visual.trunk.forward_head(x))


# ---- text -----------------------------------------------------------------------------------------------------------
class OpenClipTextTower(Tower):
    """token + positional embedding | resblocks (causal and/or padding mask) | ln_final, pooling, text_projection.

    Works on both layouts open_clip uses: the text parts as attributes of `CLIP` itself, or a `TextTransformer`
    (`CustomTextCLIP.text`). Features keep the token ids, from which the attention mask is rebuilt exactly.
    """

    def __init__(self, text: nn.Module, pool_type: str, eos_id: int | None):
        super().__init__()
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.cls_emb = getattr(text, "cls_emb", None)
        attn_mask = getattr(text, "attn_mask", None)
        self.register_buffer("attn_mask", attn_mask, persistent=False)
        self.pool_type = pool_type
        self.eos_id = eos_id
        self.use_pad_mask = bool(getattr(text, "use_pad_mask", False))
        self.pad_id = getattr(text, "pad_id", 0)
        self.heads = getattr(text, "heads", None)
        self.correct_cls_mask = bool(getattr(text, "correct_cls_mask", False))

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.transformer.resblocks)

    def stem_modules(self) -> list[nn.Module]:
        return with_params(self.token_embedding, self.positional_embedding, self.cls_emb)

    def head_modules(self) -> list[nn.Module]:
        return with_params(self.ln_final, self.text_projection)

    # open_clip's TextTransformer._embeds / _build_additive_mask, on this tower's parts
    def _attn_mask(self, text: torch.Tensor, seq_len: int, dtype: torch.dtype):
        attn_mask = self.attn_mask
        if self.use_pad_mask or self.cls_emb is not None:
            valid = text != self.pad_id
            if self.cls_emb is not None:
                cls_valid = valid.new_ones(valid.size(0), 1)
                valid = torch.cat([valid, cls_valid] if self.correct_cls_mask else [cls_valid, valid], 1)
            key_mask = valid.unsqueeze(1).expand(-1, seq_len, -1)
            additive = torch.zeros_like(key_mask, dtype=dtype)
            additive.masked_fill_(~key_mask, float("-inf"))
            additive = additive.repeat_interleave(self.heads, 0)
            attn_mask = additive if attn_mask is None else attn_mask[:seq_len, :seq_len].unsqueeze(0) + additive
        return attn_mask

    def _embeds(self, text: torch.Tensor) -> torch.Tensor:
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(text).to(cast_dtype)
        if self.cls_emb is not None:
            x = torch.cat([x, self.cls_emb.view(1, 1, -1).expand(x.shape[0], -1, -1)], 1)
        return x + self.positional_embedding[: x.shape[1]].to(cast_dtype)

    def prefix(self, inputs: Features, k: int) -> Features:
        text = inputs["input_ids"]
        x = self._embeds(text)
        mask = self._attn_mask(text, x.shape[1], x.dtype)
        x = _run_resblocks(self.transformer, x, self.transformer.resblocks[: cut_index(k, self.n_blocks)], mask)
        return {"hidden": x, "input_ids": text}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        text, x = features["input_ids"], features["hidden"]
        mask = self._attn_mask(text, x.shape[1], x.dtype)
        x = _run_resblocks(self.transformer, x, self.transformer.resblocks[cut_index(k, self.n_blocks):], mask)
        if self.cls_emb is not None:  # CoCa-style appended class token: always the last position, LN after pooling
            pooled = self.ln_final(text_global_pool(x, pool_type="last"))
        else:
            pooled = text_global_pool(self.ln_final(x), text, pool_type=self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection


@TEXT_TOWERS.register("CLIP")
def clip_text_tower(model: nn.Module) -> Tower:
    """`CLIP` keeps its text parts as its own attributes (no padding mask, no class token)."""
    return OpenClipTextTower(model, model.text_pool_type, getattr(model, "text_eos_id", None))


@TEXT_TOWERS.register("TextTransformer")
def text_transformer_tower(text: nn.Module) -> Tower:
    return OpenClipTextTower(text, text.pool_type, getattr(text, "eos_id", None))


# ---- selection ------------------------------------------------------------------------------------------------------
def _run_visual(visual: nn.Module, inputs: Features) -> torch.Tensor:
    return visual(inputs["pixel_values"])


def _run_text(text: nn.Module, inputs: Features) -> torch.Tensor:
    return text(inputs["input_ids"])


def vision_tower(model: nn.Module) -> Tower:
    name = type(model.visual).__name__
    return VISION_TOWERS.get(name)(model.visual) if name in VISION_TOWERS else OpaqueTower(model.visual, _run_visual)


def text_tower(model: nn.Module) -> Tower:
    """`CLIP` (text parts on the model) or the `text` module of `CustomTextCLIP`."""
    if type(model).__name__ == "CLIP":
        return TEXT_TOWERS.get("CLIP")(model)
    name = type(model.text).__name__
    return TEXT_TOWERS.get(name)(model.text) if name in TEXT_TOWERS else OpaqueTower(model.text, _run_text)
