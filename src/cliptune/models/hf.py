"""Hugging Face transformers dual encoders (CLIP, SigLIP) behind the DualEncoder contract.

The wrapped `CLIPModel`/`SiglipModel` stays the single owner of the weights: the towers hold its modules and the
encoder's `logit_scale`/`logit_bias` are the model's own parameters, so what is trained is exactly what
`save_pretrained` writes and any transformers user can load the export with `AutoModel.from_pretrained(dir)`.

Checkpoints load in float32 whatever dtype they were saved in (fp32 master weights; autocast does mixed precision),
and a folder without its tokenizer or image processor is refused (`hf_files`) rather than half-loaded.

A model family is a table entry (`FAMILIES`): which transformers class, which towers, how wide the embedding is and
how text is padded. Adding another CLIP-like family means two tower classes and one entry.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from cliptune.errors import ModelLoadError, UsageError
from cliptune.models.base import DualEncoder, Features
from cliptune.models.hf_files import require_complete_folder, require_real_tokenizer
from cliptune.models.hf_towers import (
    ClipTextTower,
    ClipVisionTower,
    HFTextTower,
    HFVisionTower,
    SiglipTextTower,
    SiglipVisionTower,
)
from cliptune.models.registry import BACKENDS, DIRECTORY_KINDS, EXPORT_META, SPECS, DirectoryKind, write_export_meta
from cliptune.utils.registry import Registry

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class HFFamily:
    """What differs between CLIP-like transformers models, as data."""

    model_class: str  # attribute of `transformers`, imported on use
    vision_tower: type[HFVisionTower]
    text_tower: type[HFTextTower]
    embed_dim: Callable[[Any], int]  # config → embedding width
    max_logit_scale: float  # CLIP clamps exp(logit_scale) at 100; SigLIP does not clamp
    always_pad_to_max: bool  # SigLIP pools the last position, so text must always be padded to the full length
    default_processor: Callable[[int], Any]  # image size → image processor, for models built in code
    processor_class: str  # what saves tokenizer + image processor in one call (named in error messages)
    tokenizer_files: tuple[tuple[str, ...], ...]  # alternatives: any one complete group is a loadable tokenizer


def clip_image_processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def siglip_image_processor(size: int):
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": size, "width": size})


FAMILIES: Registry[HFFamily] = Registry("Hugging Face model type")
FAMILIES.register("clip")(
    HFFamily(
        model_class="CLIPModel",
        vision_tower=ClipVisionTower,
        text_tower=ClipTextTower,
        embed_dim=lambda config: config.projection_dim,
        max_logit_scale=100.0,
        always_pad_to_max=False,
        default_processor=clip_image_processor,
        processor_class="CLIPProcessor",
        tokenizer_files=(("tokenizer.json",), ("vocab.json", "merges.txt")),
    )
)
FAMILIES.register("siglip")(
    HFFamily(
        model_class="SiglipModel",
        vision_tower=SiglipVisionTower,
        text_tower=SiglipTextTower,
        embed_dim=lambda config: config.text_config.projection_size,
        max_logit_scale=math.inf,
        always_pad_to_max=True,
        default_processor=siglip_image_processor,
        processor_class="SiglipProcessor",
        tokenizer_files=(("tokenizer.json",), ("spiece.model",)),
    )
)


def family_of(config) -> HFFamily:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"unsupported Hugging Face model type {model_type!r}; supported: {', '.join(FAMILIES.names())}"
        )
    return FAMILIES.get(model_type)


# ---- image transform helpers ----------------------------------------------------------------------------------------
def _to_rgb(image):
    """Module-level (not a lambda) so transforms pickle into DataLoader workers."""
    return image.convert("RGB")


def _size_field(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _interpolation(resample: Any):
    from torchvision.transforms import InterpolationMode

    # PIL resampling codes, as image processors store them.
    table = {
        0: InterpolationMode.NEAREST,
        1: InterpolationMode.LANCZOS,
        2: InterpolationMode.BILINEAR,
        3: InterpolationMode.BICUBIC,
        4: InterpolationMode.BOX,
        5: InterpolationMode.HAMMING,
    }
    try:
        return table[int(resample)]
    except (TypeError, ValueError, KeyError):
        return InterpolationMode.BICUBIC


@contextlib.contextmanager
def _quiet_transformers():
    """transformers draws progress bars for one-shard saves/loads; keep them out of our CLI output and logs."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ---- the encoder ----------------------------------------------------------------------------------------------------
class HFClipEncoder(DualEncoder):
    """A transformers CLIP-like model (any `FAMILIES` entry) with its tokenizer and image processor settings."""

    backend = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any = None, spec: str | None = None):
        family = family_of(model.config)
        super().__init__(
            family.vision_tower(model),
            family.text_tower(model),
            embed_dim=int(family.embed_dim(model.config)),
            max_logit_scale=family.max_logit_scale,
        )
        # The checkpoint's own (log-space) parameters, shared rather than copied: never re-initialised, and trained
        # values reach save_pretrained.
        self.logit_scale = model.logit_scale
        if isinstance(getattr(model, "logit_bias", None), nn.Parameter):
            self.logit_bias = model.logit_bias
        # Not registered as a submodule: the towers already own all of its modules, and registering it twice would
        # duplicate every weight in state_dict().
        object.__setattr__(self, "hf_model", model)
        self.family = family
        self.model_type = model.config.model_type
        self.tokenizer = tokenizer
        self._image_size = int(model.config.vision_config.image_size)
        self.image_processor = image_processor or family.default_processor(self._image_size)
        self.spec = spec or f"hf:{model.config.model_type}"
        self.eval()  # like from_pretrained: inference behaviour until a trainer asks for train()

    # ---- inputs ---------------------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        limit = int(self.hf_model.config.text_config.max_position_embeddings)
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
            limit = tokenizer_limit
        return limit

    def image_transform(self, train: bool = False):
        from torchvision import transforms as T

        p = self.image_processor
        interpolation = _interpolation(getattr(p, "resample", None))
        size = self.image_size
        if train:
            geometry = [T.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=interpolation)]
        else:
            shortest = _size_field(getattr(p, "size", None), "shortest_edge")
            if shortest:  # CLIP: shorter side to `shortest`, then the centre square
                geometry = [T.Resize(shortest, interpolation=interpolation), T.CenterCrop(size)]
            else:  # SigLIP: squash to the square input size
                geometry = [T.Resize((size, size), interpolation=interpolation)]
        mean = list(getattr(p, "image_mean", None) or OPENAI_MEAN)
        std = list(getattr(p, "image_std", None) or OPENAI_STD)
        return T.Compose([T.Lambda(_to_rgb), *geometry, T.ToTensor(), T.Normalize(mean, std)])

    def tokenize(self, texts: list[str], pad_to_max: bool = False) -> Features:
        if isinstance(texts, str):
            texts = [texts]
        padding = "max_length" if pad_to_max or self.family.always_pad_to_max else "longest"
        encoded = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        tokens = {"input_ids": encoded["input_ids"]}
        if "attention_mask" in encoded:
            tokens["attention_mask"] = encoded["attention_mask"]
        return tokens

    # ---- persistence ----------------------------------------------------------------------------------------------
    def _sync_scalars(self) -> None:
        """Copy logit scale/bias into the wrapped model if something replaced the shared parameters."""
        for name in ("logit_scale", "logit_bias"):
            mine, theirs = getattr(self, name, None), getattr(self.hf_model, name, None)
            if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor) and mine is not theirs:
                with torch.no_grad():
                    theirs.copy_(mine.detach().reshape(theirs.shape))

    def save(self, directory: str | os.PathLike) -> None:
        """transformers' native folder (safetensors + tokenizer + image processor) plus `cliptune.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / EXPORT_META).unlink(missing_ok=True)  # re-exporting: incomplete until written again
        self._sync_scalars()
        with _quiet_transformers():
            self.hf_model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        write_export_meta(
            directory,
            {
                "backend": self.backend,
                "format_version": 1,
                "model_type": self.model_type,
                "spec": self.spec,
                "embed_dim": self.embed_dim,
                "image_size": self.image_size,
                "context_length": self.context_length,
            },
        )

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike, spec: str | None = None, local_files_only: bool = True, **hf_kwargs
    ) -> "HFClipEncoder":
        """Model, tokenizer and image processor from a complete folder or, if allowed, the hub.

        Weights load in float32 whatever the checkpoint's dtype: many hub checkpoints are bf16/fp16, and Adam's
        small updates vanish in bf16 rounding (training in half precision is autocast's job, not the master
        weights'). Exports are therefore float32 too.
        """
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        source = os.fspath(source)
        hf_kwargs.setdefault("dtype", torch.float32)
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
            family = family_of(config)
            if Path(source).is_dir():
                require_complete_folder(Path(source), family.tokenizer_files, family.processor_class)
            model_class = getattr(transformers, family.model_class)
            with _quiet_transformers():
                model = model_class.from_pretrained(
                    source, config=config, local_files_only=local_files_only, **hf_kwargs
                )
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
        except ModelLoadError:
            raise
        except Exception as err:  # transformers raises many types for a bad folder; all mean "cannot load this"
            raise ModelLoadError(f"{source}: cannot load Hugging Face model ({type(err).__name__}: {err})") from err
        require_real_tokenizer(tokenizer, source, family.processor_class)
        return cls(model, tokenizer, processor, spec=spec)


# ---- spec and directory resolution ----------------------------------------------------------------------------------
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the user has declared the hub unreachable (the variables huggingface_hub itself honours)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """A bounded TCP probe of the hub endpoint; DNS runs in a thread so an unresolvable name cannot hang us."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _no_hub(hub_id: str) -> ModelLoadError:
    name = hub_id.rsplit("/", 1)[-1]
    return ModelLoadError(
        f"hf:{hub_id}: no local directory {hub_id} (relative to {os.getcwd()}), no model hub is reachable from here "
        f"and {hub_id!r} is not in the local Hugging Face cache. "
        f"Pass a local directory instead: where the hub is reachable, save it with "
        f"`CLIPModel.from_pretrained('{hub_id}').save_pretrained(DIR)` and "
        f"`CLIPProcessor.from_pretrained('{hub_id}').save_pretrained(DIR)` (SiglipModel/SiglipProcessor for SigLIP), "
        f"copy DIR here and use --model hf:/path/to/{name}"
    )


def _from_hub(hub_id: str, spec: str, **hf_kwargs) -> HFClipEncoder:
    try:  # the local cache first: never touches the network
        return HFClipEncoder.from_pretrained(hub_id, spec=spec, local_files_only=True, **hf_kwargs)
    except ModelLoadError:
        if hub_offline() or not hub_reachable():
            raise _no_hub(hub_id) from None
    return HFClipEncoder.from_pretrained(hub_id, spec=spec, local_files_only=False, **hf_kwargs)


@SPECS.register("hf")
def build_hf(argument: str | None, **hf_kwargs) -> HFClipEncoder:
    """`hf:<local directory>` or `hf:<hub id>` (the hub only from the cache or when it is reachable)."""
    if not argument:
        raise UsageError("hf: needs a directory or hub id, e.g. hf:/path/to/clip-vit-base-patch32")
    spec = f"hf:{argument}"
    path = Path(argument).expanduser()
    if path.is_dir():
        return HFClipEncoder.from_pretrained(path, spec=spec, **hf_kwargs)
    if path.exists():
        raise ModelLoadError(f"{argument}: hf: expects a save_pretrained directory, not a file")
    if not _HUB_ID.match(argument):
        raise ModelLoadError(f"{argument}: no such directory (and not a hub id like org/name)")
    return _from_hub(argument, spec, **hf_kwargs)


@BACKENDS.register("hf")
def load_export(directory: Path, meta: dict, **hf_kwargs) -> HFClipEncoder:
    """Reload what `HFClipEncoder.save` wrote."""
    return HFClipEncoder.from_pretrained(directory, spec=str(directory), **hf_kwargs)


def is_hf_directory(directory: Path) -> bool:
    """A transformers folder of a supported family (config.json with a known model_type)."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in FAMILIES


DIRECTORY_KINDS.register("hf")(
    DirectoryKind(matches=is_hf_directory, load=lambda directory, **kw: build_hf(str(directory), **kw))
)
