"""Score image–text pairs with a model and a match head; load a model together with its saved `match.json`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cliptune.data.records import Record
from cliptune.eval.matching import match_metrics, tune_threshold
from cliptune.inference.embed import encode_images, encode_texts
from cliptune.models.base import DualEncoder
from cliptune.models.match_head import MatchHead, ScoreHead, load_match_head


def pair_embeddings(model: DualEncoder, records: list[Record], batch_size: int = 64, num_workers: int = 0,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, D] image and text embeddings of each record's (image, first caption), every distinct image and text
    encoded once."""
    was_training = model.training
    image_slot: dict[str, int] = {}
    unique_images: list[Record] = []
    for rec in records:
        if rec.image not in image_slot:
            image_slot[rec.image] = len(unique_images)
            unique_images.append(rec)
    text_slot: dict[str, int] = {}
    for rec in records:
        text_slot.setdefault(rec.captions[0], len(text_slot))
    with torch.random.fork_rng(devices=[]):
        image_emb = encode_images(model, unique_images, batch_size=batch_size, num_workers=num_workers,
                                  progress=progress)
        text_emb = encode_texts(model, list(text_slot), progress=progress)
    model.train(was_training)
    img_index = torch.tensor([image_slot[r.image] for r in records], dtype=torch.long)
    txt_index = torch.tensor([text_slot[r.captions[0]] for r in records], dtype=torch.long)
    return image_emb[img_index], text_emb[txt_index]


@torch.no_grad()
def head_scores(head: MatchHead, image_emb: torch.Tensor, text_emb: torch.Tensor,
                batch_size: int = 4096) -> torch.Tensor:
    was_training = head.training
    head.eval()
    device = next(head.parameters()).device
    out = [head.score(image_emb[s:s + batch_size].to(device), text_emb[s:s + batch_size].to(device)).float().cpu()
           for s in range(0, len(image_emb), batch_size)]
    head.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def score_pairs(model: DualEncoder, head: MatchHead | None, records: list[Record], batch_size: int = 64,
                num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """[N] scores, one per record (its image and its first caption): cosine similarity for the `score` head (or
    no head), match probability for `classifier`."""
    if not records:
        return torch.empty(0)
    head = head if head is not None else ScoreHead()
    if any(p.device != next(model.parameters()).device for p in head.parameters()):
        head = head.to(next(model.parameters()).device)
    image_emb, text_emb = pair_embeddings(model, records, batch_size, num_workers, progress)
    return head_scores(head, image_emb, text_emb)


def evaluate_match(model: DualEncoder, head: MatchHead | None, records: list[Record], threshold: float | None = None,
                   metric: str = "f1", progress: bool = True, batch_size: int = 64, num_workers: int = 0) -> dict:
    """`match_metrics` on labelled records at `threshold` (default: the head's; when it has none, the best one on
    these records, reported as `threshold_tuned_on: "self"` — optimistic, use only for validation)."""
    scores = score_pairs(model, head, records, batch_size, num_workers, progress)
    labels = [r.label for r in records]
    if threshold is None and head is not None:
        threshold = head.threshold
    tuned_on_self = threshold is None
    if tuned_on_self:
        threshold = tune_threshold(scores.numpy(), labels, metric)
    metrics = match_metrics(scores.numpy(), labels, threshold)
    if tuned_on_self:
        metrics["threshold_tuned_on"] = "self"
    return metrics


def load_matcher(spec: str | os.PathLike, threshold: float | None = None) -> tuple[DualEncoder, MatchHead]:
    """The model (any spec or run directory) and its match head from `match.json` (a plain cosine `score` head
    when there is none); `threshold` overrides the saved one."""
    from cliptune.models.registry import load_model

    model = load_model(spec)
    head = load_match_head(spec) if Path(os.fspath(spec)).expanduser().is_dir() else None
    head = head if head is not None else ScoreHead()
    if threshold is not None:
        head.threshold = float(threshold)
    head = head.to(next(model.parameters()).device)
    return model.eval(), head.eval()


def load_calibration(spec: str | os.PathLike):
    """The Platt calibration saved with the match head (`match.json` "calibration"), or None."""
    import json

    from cliptune.eval.calibration import Platt
    from cliptune.models.match_head import MATCH_FILE, match_dir

    if not Path(os.fspath(spec)).expanduser().is_dir():
        return None
    folder = match_dir(spec)
    if folder is None:
        return None
    return Platt.from_dict(json.loads((folder / MATCH_FILE).read_text()).get("calibration"))
