"""Embed a split and score it: the bridge between models and the pure metric functions in `cliptune.eval`.

When a FeatureCache is given, frozen prefixes come from it and only the trainable suffix runs, so evaluating during
training costs a fraction of a full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cliptune.data.datasets import CaptionIndex
from cliptune.data.records import Record
from cliptune.eval.retrieval import QueryRanks, retrieval_metrics, retrieval_metrics_and_ranks
from cliptune.inference.embed import encode_images, encode_texts, suffix_batched
from cliptune.models.base import DualEncoder


def embed_split(model: DualEncoder, records: list[Record], cache=None, progress: bool = True,
                batch_size: int = 64, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, CaptionIndex]:
    captions = CaptionIndex.from_records(records)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):  # evaluation never shifts the training random stream
        if cache is not None and cache.covers("image"):
            image_emb = suffix_batched(model.image_tower, cache.images(records), cache.plan.k["image"])
        else:
            image_emb = encode_images(model, records, batch_size=batch_size, num_workers=num_workers,
                                      progress=progress)
        if cache is not None and cache.covers("text"):
            text_emb = suffix_batched(model.text_tower, cache.texts(captions.texts), cache.plan.k["text"])
        else:
            text_emb = encode_texts(model, captions.texts, progress=progress)
    model.train(was_training)
    return image_emb, text_emb, captions


@dataclass
class Scored:
    """One model's evaluation of a split: the metrics and, for retrieval, the per-query ranks they are means of
    (kept so gains over another model on the same queries get a paired bootstrap interval without re-encoding)."""

    metrics: dict
    ranks: dict[str, QueryRanks] | None = None


def score_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor, captions: CaptionIndex,
                     chunk_size: int = 1024) -> Scored:
    metrics, ranks = retrieval_metrics_and_ranks(image_emb, text_emb, captions.text_to_image, chunk_size=chunk_size)
    return Scored(metrics, ranks)


def score_records(model: DualEncoder, records: list[Record], cache=None, progress: bool = True,
                  batch_size: int = 64, num_workers: int = 0, chunk_size: int = 1024) -> Scored:
    """`evaluate_records` that keeps the per-query ranks too."""
    image_emb, text_emb, captions = embed_split(model, records, cache, progress, batch_size, num_workers)
    return score_embeddings(image_emb, text_emb, captions, chunk_size)


def evaluate_records(model: DualEncoder, records: list[Record], cache=None, progress: bool = True,
                     batch_size: int = 64, num_workers: int = 0, chunk_size: int = 1024) -> dict:
    image_emb, text_emb, captions = embed_split(model, records, cache, progress, batch_size, num_workers)
    return retrieval_metrics(image_emb, text_emb, captions.text_to_image, chunk_size=chunk_size)
