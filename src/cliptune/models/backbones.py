"""Image backbones from timm or torchvision, cut into stem → blocks → final norm, so any of them can be a Tower.

A family (timm ViT, timm ResNet, ConvNeXt, EfficientNet, torchvision ResNet) is one small class that says which
modules are the stem, which are the blocks and how the backbone pools; it is looked up by the model's class. Every
family reproduces the library's own `forward_features` + `forward_head(pre_logits=True)` call for call, so a cut
backbone computes exactly what the uncut one does. A timm model of any other family still works, as one block.

CNN blocks are stages (timm/torchvision ResNet: layer1..layer4), transformer blocks are layers.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from cliptune.errors import ModelLoadError
from cliptune.utils.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "tv:"


class Backbone(nn.Module, ABC):
    """Uniform view of an image backbone; subclasses name the parts of one family."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    # ---- structure ------------------------------------------------------------------------------------------------
    def stem_parts(self) -> list:
        """Modules or bare parameters before the first block."""
        return []

    @abstractmethod
    def blocks(self) -> list[nn.Module]:
        """The ordered trunk blocks: the tower's cut points."""

    def head_parts(self) -> list:
        """Parameter-carrying modules after the blocks (final norms, timm's own pooling heads)."""
        return []

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    # ---- computation ----------------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks()[start:stop]:
            x = block(x)
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """After the last block: final norm; the result is a feature map (NCHW) or tokens (NLC)."""
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own pooling of the finished features to one vector per image."""
        return self.model.forward_head(x, pre_logits=True)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Finished features as a token sequence (B, N, C), for attention pooling."""
        return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x


BACKBONE_FAMILIES: Registry[type[Backbone]] = Registry("image backbone family")


def _timm_vit_position_tokens(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Prefix tokens + positional embedding of a timm ViT, from its public attributes.

    Mirrors what timm's forward does between `patch_embed` and `patch_drop`; `tests/test_models_composed.py` checks
    the whole backbone against timm's own `forward_features` + `forward_head`, so an upstream change fails there.
    """
    pos_embed = m.pos_embed
    if pos_embed is not None and getattr(m, "dynamic_img_size", False):  # (B, H, W, C): resample to this grid
        from timm.layers import resample_abs_pos_embed

        pos_embed = resample_abs_pos_embed(pos_embed, new_size=x.shape[1:3], old_size=m.patch_embed.grid_size,
                                           num_prefix_tokens=0 if m.no_embed_class else m.num_prefix_tokens)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    prefix = [t.expand(x.shape[0], -1, -1) for t in (m.cls_token, m.reg_token) if t is not None]
    if pos_embed is not None and m.no_embed_class:
        x = x + pos_embed  # deit-3 / big_vision: the position table skips the prefix tokens
    x = torch.cat([*prefix, x], dim=1) if prefix else x
    if pos_embed is not None and not m.no_embed_class:
        x = x + pos_embed
    return m.pos_drop(x)


@BACKBONE_FAMILIES.register("timm:VisionTransformer")
class TimmViT(Backbone):
    def stem_parts(self) -> list:
        m = self.model
        return [m.patch_embed, m.cls_token, m.reg_token, m.pos_embed, m.norm_pre]

    def blocks(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def head_parts(self) -> list:
        m = self.model
        return [m.norm, m.fc_norm, getattr(m, "attn_pool", None), m.head]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.norm_pre(m.patch_drop(_timm_vit_position_tokens(m, m.patch_embed(x))))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)


@BACKBONE_FAMILIES.register("timm:ResNet")
class TimmResNet(Backbone):
    def stem_parts(self) -> list:
        m = self.model
        return [m.conv1, m.bn1]

    def blocks(self) -> list[nn.Module]:
        m = self.model
        return [m.layer1, m.layer2, m.layer3, m.layer4]

    def head_parts(self) -> list:
        return [self.model.fc]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.act1(m.bn1(m.conv1(x))))


@BACKBONE_FAMILIES.register("timm:ConvNeXt")
class TimmConvNeXt(Backbone):
    def stem_parts(self) -> list:
        return [self.model.stem]

    def blocks(self) -> list[nn.Module]:
        return list(self.model.stages)

    def head_parts(self) -> list:
        return [self.model.norm_pre, self.model.head]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.stem(x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm_pre(x)


@BACKBONE_FAMILIES.register("timm:EfficientNet")
class TimmEfficientNet(Backbone):
    """Stages, then the 1×1 conv head as one more block (as `lite` cuts EfficientNet-Lite0)."""

    def stem_parts(self) -> list:
        return [self.model.conv_stem, self.model.bn1]

    def blocks(self) -> list[nn.Module]:
        # Built on each call, never registered: conv head and bn2 belong to `model`; this only groups them (and
        # always the current modules, also after LoRA swapped one of them).
        return [*self.model.blocks, nn.Sequential(self.model.conv_head, self.model.bn2)]

    def head_parts(self) -> list:
        return [self.model.classifier]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.bn1(self.model.conv_stem(x))


@BACKBONE_FAMILIES.register("timm:*")
class TimmWhole(Backbone):
    """Any other timm model: its `forward_features` is a single block."""

    def blocks(self) -> list[nn.Module]:
        return [self.model]

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.model.forward_features(x) if start < stop else x


@BACKBONE_FAMILIES.register("tv:ResNet")
class TorchvisionResNet(TimmResNet):
    """torchvision ResNet/ResNeXt/Wide ResNet: same stages as timm's, `relu` and `avgpool` names."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._width = int(model.fc.in_features)
        model.fc = nn.Identity()  # the ImageNet classifier is not part of the backbone

    @property
    def num_features(self) -> int:
        return self._width

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.relu(m.bn1(m.conv1(x))))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.avgpool(x), 1)


# ---- construction ---------------------------------------------------------------------------------------------------
def _create_timm(name: str, image_size: int | None) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".")[0]):  # `arch.tag` names the tag's config; weights come only from files
        raise ModelLoadError(f"unknown timm model {name!r}; see timm.list_models() for the names")
    if image_size:
        try:  # transformers take the input size at construction (positional embeddings); CNNs do not
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size)
        except TypeError:
            pass
    return timm.create_model(name, pretrained=False, num_classes=0)


def _create_torchvision(name: str) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        raise ModelLoadError(f"unknown torchvision model {name!r} ({err})") from None


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a local weights file into a backbone; classifier weights are ignored, anything else missing is an error."""
    from cliptune.models.weights import load_state_dict_file

    state = load_state_dict_file(path)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    own = model.state_dict()
    classifier = {key for key in state if key not in own and key.split(".")[0] in ("fc", "head", "classifier")}
    state = {key: value for key, value in state.items() if key not in classifier}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: weights do not fit this backbone (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def _wrap(model: nn.Module, source: str) -> Backbone:
    family = f"{source}:{type(model).__name__}"
    if family in BACKBONE_FAMILIES:
        return BACKBONE_FAMILIES.get(family)(model)
    if source == "timm":
        return TimmWhole(model)
    known = ", ".join(n for n in BACKBONE_FAMILIES.names() if n.startswith("tv:"))
    raise ModelLoadError(f"torchvision {type(model).__name__} backbones are not supported; supported: {known}")


def build_backbone(name: str, weights: str | os.PathLike | None = None, image_size: int | None = None) -> Backbone:
    """`<timm name>` or `tv:<torchvision name>`, randomly initialised unless a local `weights` file is given.

    Weights load after the family has removed the classifier (torchvision models keep theirs until then), so a
    checkpoint with an ImageNet classifier and a backbone-only export (which has none) both fit.
    """
    if name.startswith(TORCHVISION_PREFIX):
        backbone = _wrap(_create_torchvision(name[len(TORCHVISION_PREFIX):]), "tv")
    else:
        backbone = _wrap(_create_timm(name, image_size), "timm")
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            raise ModelLoadError(f"{weights}: backbone weights file not found")
        load_backbone_weights(backbone.model, Path(weights).expanduser())
    return backbone


def backbone_preprocess(backbone: Backbone, image_size: int | None) -> dict:
    """Input size, mean and std the backbone expects (timm's pretrained config; ImageNet for torchvision)."""
    cfg = getattr(backbone.model, "pretrained_cfg", None) or {}
    size = image_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return {"image_size": size, "mean": mean, "std": std}
