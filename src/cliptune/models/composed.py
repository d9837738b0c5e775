"""`composed:<image backbone>[@<weights file>]+<hf text model>`: any image backbone with any Hugging Face text encoder.

The image side is a timm model (`resnet50`, `vit_small_patch16_224`, ...) or a torchvision one (`tv:resnet50`),
randomly initialised or loaded from a local weights file (`composed:resnet50@/w/resnet50.safetensors+hf:/m/minilm`);
nothing is downloaded. The text side is an `AutoModel` from a local `save_pretrained` directory, mean pooled. Each
tower ends in a projection head (an MLP by default, optionally with BatchNorm, optionally after attention pooling of
the image feature map) into a shared space with a learnable logit scale, CLIP-style (LiT, Zhai et al. 2022, is the
frozen-text mirror image of this setup).

The text encoder is frozen by default (`default_freeze`), as pretrained sentence encoders already embed captions
well and the image side has the most to learn; `model.preset: unfreeze` trains it too.

Export: each part in its own native format, so each is reusable on its own: `image_backbone.safetensors` (the
backbone's state dict without a classifier: loadable with `timm.create_model(name, num_classes=0)`, or into a
torchvision model whose `fc` is `nn.Identity()`), `text/` (`save_pretrained` model and
tokenizer), `heads.safetensors` (pooling, projections, logit scale) and `cliptune.json`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from cliptune.errors import ModelLoadError, UsageError
from cliptune.models.backbones import backbone_preprocess, build_backbone
from cliptune.models.base import DualEncoder, Features
from cliptune.models.composed_towers import BackboneTower, HFEncoderTower, cuttable_text_model, run_hf_encoder
from cliptune.models.heads import build_head
from cliptune.models.registry import BACKENDS, EXPORT_META, SPECS, write_export_meta
from cliptune.models.tower_parts import OpaqueTower

IMAGE_WEIGHTS = "image_backbone.safetensors"
TEXT_DIR = "text"
HEADS_WEIGHTS = "heads.safetensors"
DEFAULT_CONTEXT_LENGTH = 77


def _to_rgb(image):
    """Module-level (not a lambda) so transforms pickle into DataLoader workers."""
    return image.convert("RGB")


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars or "pooler weights not used" notes (expected here, not news) in our output."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_text_model(directory: Path):
    """AutoModel + tokenizer from a local directory; BERT-family models are loaded without their unused pooler.

    Always in float32, whatever the folder's dtype: half-precision master weights lose small updates to rounding.
    """
    from transformers import AutoModel, AutoTokenizer

    kw = {"local_files_only": True, "dtype": torch.float32}
    try:
        with _quiet_transformers():
            try:
                model = AutoModel.from_pretrained(str(directory), add_pooling_layer=False, **kw)
            except TypeError:  # families without a pooler option
                model = AutoModel.from_pretrained(str(directory), **kw)
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{directory}: cannot load a Hugging Face text model ({err})") from err
    return model, tokenizer


class ComposedDualEncoder(DualEncoder):
    backend = "composed"
    default_freeze = "text"  # see module doc; freeze.plan_from_config adds it unless a preset is chosen

    def __init__(self, image: str, text_dir: str | os.PathLike, image_weights: str | os.PathLike | None = None,
                 embed_dim: int = 256, head: str = "mlp", head_hidden: int | None = None,
                 head_batch_norm: bool = False, attention_pool: bool = False, image_size: int | None = None,
                 context_length: int | None = None, logit_scale: float = 1 / 0.07):
        backbone = build_backbone(image, image_weights, image_size)
        preprocess = backbone_preprocess(backbone, image_size)
        text_model, tokenizer = _load_text_model(Path(text_dir))
        head_kw = dict(hidden_dim=head_hidden, batch_norm=head_batch_norm)
        image_tower = BackboneTower(backbone, build_head(head, backbone.num_features, embed_dim, **head_kw),
                                    attention_pool=attention_pool)
        text_proj = build_head(head, text_model.config.hidden_size, embed_dim, **head_kw)
        if cuttable_text_model(text_model):
            text_tower = HFEncoderTower(text_model, text_proj)
        else:
            text_tower = OpaqueTower(text_model, run_hf_encoder, text_proj)
        super().__init__(image_tower, text_tower, embed_dim=embed_dim, logit_scale=logit_scale)
        # Not registered as a submodule: text_tower owns it, and registering it twice would duplicate its weights.
        object.__setattr__(self, "text_model", text_model)
        self.tokenizer = tokenizer
        self._image_size = preprocess["image_size"]
        self._mean, self._std = preprocess["mean"], preprocess["std"]
        limits = [DEFAULT_CONTEXT_LENGTH, getattr(text_model.config, "max_position_embeddings", None),
                  getattr(tokenizer, "model_max_length", None)]
        self._context_length = int(context_length or min(v for v in limits if isinstance(v, int) and v > 0))
        self.arch = {"image": image, "embed_dim": embed_dim, "head": head, "head_hidden": head_hidden,
                     "head_batch_norm": head_batch_norm, "attention_pool": attention_pool,
                     "image_size": self._image_size, "context_length": self._context_length}
        self.spec = f"composed:{image}+{text_dir}"
        self.eval()

    # ---- inputs ---------------------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._context_length

    def image_transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        size = self._image_size
        if train:
            geometry = [T.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
        else:
            geometry = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
        return T.Compose([T.Lambda(_to_rgb), *geometry, T.ToTensor(), T.Normalize(self._mean, self._std)])

    def tokenize(self, texts: list[str], pad_to_max: bool = False) -> Features:
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding="max_length" if pad_to_max else True, truncation=True,
                             max_length=self._context_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # ---- persistence ----------------------------------------------------------------------------------------------
    def part_prefixes(self) -> tuple[str, str]:
        """State-dict prefixes of the two backbones, whose weights the export stores apart from the heads."""
        text_attr = "model" if isinstance(self.text_tower, HFEncoderTower) else "backbone"
        return "image_tower.backbone.model.", f"text_tower.{text_attr}."

    def save(self, directory: str | os.PathLike) -> None:
        from cliptune.models.weights import save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / EXPORT_META).unlink(missing_ok=True)  # re-exporting: incomplete until written again
        save_safetensors_atomic(self.image_tower.backbone.model.state_dict(), directory / IMAGE_WEIGHTS)
        with _quiet_transformers():
            self.text_model.save_pretrained(directory / TEXT_DIR)
        self.tokenizer.save_pretrained(directory / TEXT_DIR)
        parts = self.part_prefixes()
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith(parts)}
        save_safetensors_atomic(heads, directory / HEADS_WEIGHTS)
        write_export_meta(directory, {"backend": self.backend, "format_version": 1, "arch": self.arch,
                                      "spec": self.spec})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ComposedDualEncoder":
        from cliptune.models.registry import read_export_meta
        from cliptune.models.weights import load_state_dict_file

        directory = Path(directory)
        arch = dict(read_export_meta(directory)["arch"])
        model = cls(arch.pop("image"), directory / TEXT_DIR, image_weights=directory / IMAGE_WEIGHTS, **arch)
        missing, unexpected = model.load_state_dict(load_state_dict_file(directory / HEADS_WEIGHTS), strict=False)
        parts = model.part_prefixes()
        missing = [k for k in missing if not k.startswith(parts)]
        if missing or unexpected:
            raise ModelLoadError(f"{directory / HEADS_WEIGHTS}: does not fit the exported architecture "
                                 f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.spec = str(directory)
        return model


# ---- spec -----------------------------------------------------------------------------------------------------------
def parse_composed(argument: str) -> tuple[str, str | None, str]:
    """`<image>[@<weights>]+<text>` → (image, weights, text directory); `+hf:` marks the split when both exist."""
    if "+hf:" in argument:
        image, text = argument.split("+hf:", 1)
    elif "+" in argument:
        image, text = argument.split("+", 1)
    else:
        raise UsageError(f"composed:{argument}: expected composed:<image backbone>[@<weights>]+<hf text model dir>, "
                         f"e.g. composed:resnet50+hf:/models/all-MiniLM-L6-v2")
    image, _, weights = image.partition("@")
    if not image or not text:
        raise UsageError(f"composed:{argument}: both an image backbone and a text model are needed")
    return image, weights or None, text


def _text_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    name = text.rstrip("/").rsplit("/", 1)[-1]
    raise ModelLoadError(
        f"{text}: not a local directory. No model hub is reachable from here, so the text model must be a "
        f"save_pretrained folder: where the hub is reachable run `AutoModel.from_pretrained('{text}')"
        f".save_pretrained(DIR)` and `AutoTokenizer.from_pretrained('{text}').save_pretrained(DIR)`, copy DIR here "
        f"and use composed:<image>+hf:/path/to/{name}"
    )


@SPECS.register("composed")
def build_composed(argument: str | None, **kw) -> ComposedDualEncoder:
    """Fresh heads on a (random or locally loaded) image backbone and a local HF text encoder."""
    if not argument:
        raise UsageError("composed: needs <image backbone>+<hf text model>, e.g. composed:resnet50+hf:/models/minilm")
    image, weights, text = parse_composed(argument)
    model = ComposedDualEncoder(image, _text_dir(text), image_weights=weights, **kw)
    model.spec = f"composed:{argument}"
    return model


@BACKENDS.register("composed")
def load_composed_export(directory: Path, meta: dict, **kw) -> ComposedDualEncoder:
    return ComposedDualEncoder.load(directory)


__all__ = ["ComposedDualEncoder", "build_composed", "parse_composed"]
