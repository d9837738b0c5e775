"""Zero-shot classification with a dual encoder: class names + prompt templates → prototypes → probabilities.

The bridge between a model and the pure functions of `cliptune.eval.zeroshot`: prompts are embedded here, class
prototypes are the prompt-ensembled mean (Radford et al. 2021), and probabilities are the softmax of the
cosine similarities times the model's own logit scale, i.e. exactly the distribution the contrastive loss trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from cliptune.data.records import Record
from cliptune.errors import DataError, UsageError
from cliptune.eval.zeroshot import (class_embeddings_from_templates, per_class_accuracy, topk_accuracy,
                                    zeroshot_logits)
from cliptune.inference.embed import encode_images, encode_texts
from cliptune.inference.templates import resolve_templates
from cliptune.models.base import DualEncoder

PROMPTS_PER_CALL = 4096  # prompts embedded per encode_texts call: bounds memory for 1,000 classes x 80 templates

ImageInput = str | Path | Record


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """`"cat, dog,car"` → `["cat", "dog", "car"]`; empty names and repeats are usage errors, not silent drops."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not n for n in names):
        raise UsageError(f"--labels needs comma-separated class names without empty entries, got {text!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--labels repeats {', '.join(repeated)}")
    return names


def image_records(images: Sequence[ImageInput]) -> list[Record]:
    """Paths (or records) → records; a missing path is a DataError naming it, before any model work."""
    records = []
    for item in images:
        if isinstance(item, Record):
            records.append(item)
            continue
        path = Path(item)
        if not path.is_file():
            raise DataError("image not found", file=str(path))
        records.append(Record(image=str(path), captions=[], sources=[(str(path), None)]))  # type: ignore[list-item]
    if not records:
        raise UsageError("no images given")
    return records


def class_embeddings(model: DualEncoder, classnames: Sequence[str], templates: Sequence[str],
                     batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """`[C, d]` prompt-ensembled class prototypes, embedding at most PROMPTS_PER_CALL prompts at a time."""
    per_call = max(1, PROMPTS_PER_CALL // len(templates))
    chunks = []
    for start in range(0, len(classnames), per_call):
        names = classnames[start:start + per_call]
        prompts = [t.replace("{}", name) for name in names for t in templates]
        emb = encode_texts(model, prompts, batch_size=batch_size, progress=progress)
        chunks.append(class_embeddings_from_templates(emb, n_templates=len(templates)))
    return torch.cat(chunks)


def zeroshot_scores(model: DualEncoder, images: Sequence[ImageInput], classnames: Sequence[str],
                    templates: str | Path | Sequence[str] = "simple", batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor:
    """`[N, C]` logits: the model's logit scale times cosine(image, class prototype)."""
    if not classnames:
        raise UsageError("zero-shot classification needs at least one class name")
    template_list = resolve_templates(templates if not isinstance(templates, tuple) else list(templates))
    records = image_records(images)
    class_emb = class_embeddings(model, list(classnames), template_list, progress=progress)
    image_emb = encode_images(model, records, batch_size=batch_size, progress=progress)
    return zeroshot_logits(image_emb, class_emb, scale=float(model.scale().detach()))


def classify(model: DualEncoder, images: Sequence[ImageInput], labels: Sequence[str],
             templates: str | Path | Sequence[str] = "simple", batch_size: int = 64,
             progress: bool = False) -> torch.Tensor:
    """`[N, C]` class probabilities (rows sum to 1) for each image over `labels`."""
    return zeroshot_scores(model, images, labels, templates, batch_size, progress).softmax(dim=-1)


def evaluate_zeroshot(model: DualEncoder, records: Sequence[Record], classnames: Sequence[str],
                      templates: str | Path | Sequence[str] = "simple", ks: Sequence[int] = (1, 5),
                      batch_size: int = 64, progress: bool = False) -> dict:
    """Top-k accuracy over labelled records (label = index into `classnames`) and per-class top-1 accuracy.

    A k at or above the number of classes is trivially 1.0; it is still reported, so outputs keep one shape.
    """
    labels = [r.label for r in records]
    if any(label is None or not 0 <= label < len(classnames) for label in labels):
        raise UsageError(f"every record needs a label in 0..{len(classnames) - 1}")
    logits = zeroshot_scores(model, records, classnames, templates, batch_size, progress)
    target = torch.tensor(labels, dtype=torch.long)
    per_class = per_class_accuracy(logits, target, k=1)
    valid = [acc for acc, n in per_class if acc is not None]
    return {
        **topk_accuracy(logits, target, ks),
        "mean_per_class_top1": sum(valid) / len(valid) if valid else math.nan,
        "n_images": len(records),
        "n_classes": len(classnames),
        "per_class": [{"class": name, "top1": acc, "n_images": n}
                      for name, (acc, n) in zip(classnames, per_class)],
    }
