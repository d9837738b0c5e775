"""Embedding one-off queries (a typed text, an uploaded picture) rather than a dataset: no records, no files, no
progress bars, and a lock, because a server answers several requests at once and tokenizers are not thread-safe."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from cliptune.data.images import to_rgb

if TYPE_CHECKING:
    from PIL import Image

    from cliptune.models.base import DualEncoder

_LOCK = threading.Lock()


def _device(model: "DualEncoder") -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def embed_texts(model: "DualEncoder", texts: list[str]) -> torch.Tensor:
    """[len(texts), dim] L2-normalised float32 embeddings on the CPU."""
    with _LOCK:
        model.eval()
        tokens = {key: value.to(_device(model)) for key, value in model.tokenize(list(texts)).items()}
        return model.encode_text(tokens).float().cpu()


@torch.inference_mode()
def embed_pil(model: "DualEncoder", images: list["Image.Image"]) -> torch.Tensor:
    """[len(images), dim] L2-normalised float32 embeddings of decoded pictures, through the model's eval transform."""
    with _LOCK:
        model.eval()
        transform = model.image_transform(train=False)
        pixels = torch.stack([transform(to_rgb(image)) for image in images]).to(_device(model))
        return model.encode_image(pixels).float().cpu()


@torch.inference_mode()
def logit_scale(model: "DualEncoder") -> float:
    """exp(logit_scale) as the model was trained with: turns cosine similarities into softmax logits."""
    return float(model.scale())


__all__ = ["embed_pil", "embed_texts", "logit_scale"]
