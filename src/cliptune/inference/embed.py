"""Batch encoders over records with progress bars: the one place that turns images and captions into features.

`encode_*` returns final L2-normalised embeddings; `prefix_*` returns a tower's features at a cut point (used by the
feature cache). Both run in inference mode in batches so memory stays flat.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cliptune.data.datasets import ImageFiles
from cliptune.data.records import Record
from cliptune.models.base import DualEncoder, Features


def _stack(chunks: list[Features]) -> Features:
    return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


def image_batches(model: DualEncoder, records: list[Record], batch_size: int = 16, num_workers: int = 0):
    loader = DataLoader(ImageFiles(records, model.image_transform(train=False)), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    return loader


@torch.inference_mode()
def prefix_images(model: DualEncoder, records: list[Record], k: int, batch_size: int = 16, num_workers: int = 0,
                  desc: str = "image features", progress: bool = True) -> Features:
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for pixels in tqdm(image_batches(model, records, batch_size, num_workers), desc=desc, disable=not progress,
                       unit="batch", leave=False):
        feats = model.image_tower.prefix({"pixel_values": pixels.to(device)}, k)
        chunks.append({key: v.cpu() for key, v in feats.items()})
    return _stack(chunks)


@torch.inference_mode()
def prefix_texts(model: DualEncoder, texts: list[str], k: int, batch_size: int = 256, desc: str = "text features",
                 progress: bool = True) -> Features:
    """Tokenised with padding to the longest caption of the whole list, so per-batch features stack."""
    model.eval()
    device = next(model.parameters()).device
    tokens = model.tokenize(texts)
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, unit="batch", leave=False):
        batch = {key: v[start:start + batch_size].to(device) for key, v in tokens.items()}
        feats = model.text_tower.prefix(batch, k)
        chunks.append({key: v.cpu() for key, v in feats.items()})
    return _stack(chunks)


def feature_batches(tower, features: Features, batch_size: int):
    """Cached cut-point features in batches, each trimmed to its own padding and on the tower's device."""
    device = next(tower.parameters()).device
    n = next(iter(features.values())).shape[0]
    for start in range(0, n, batch_size):
        batch = tower.trim({key: v[start:start + batch_size] for key, v in features.items()})
        yield {key: v.to(device) for key, v in batch.items()}


@torch.inference_mode()
def suffix_batched(tower, features: Features, k: int, batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
    out = [tower.suffix(batch, k).float().cpu() for batch in feature_batches(tower, features, batch_size)]
    emb = torch.cat(out)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def encode_images(model: DualEncoder, records: list[Record], batch_size: int = 16, num_workers: int = 0,
                  progress: bool = True) -> torch.Tensor:
    feats = prefix_images(model, records, 0, batch_size, num_workers, desc="embedding images", progress=progress)
    return suffix_batched(model.image_tower, feats, 0)


def encode_texts(model: DualEncoder, texts: list[str], batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    feats = prefix_texts(model, texts, 0, batch_size, desc="embedding texts", progress=progress)
    return suffix_batched(model.text_tower, feats, 0)
