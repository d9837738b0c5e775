"""Heads that decide whether a text fits an image (`task: match`), and their `match.json` next to the model.

* `score`      — the cosine similarity of the two embeddings, thresholded. For training it also gives a logit,
                 t·cos + b with a learnable scale and bias (as SigLIP's pairwise logit, Zhai et al. 2023), so BCE on
                 labelled pairs moves the encoders; the reported score stays the cosine.
* `classifier` — a small MLP over [i, t, i⊙t, |i−t|] (the matching features of InferSent, Conneau et al. 2017),
                 trained with BCE; its score is the match probability.

A head's `threshold` is tuned on validation pairs (`eval/matching.tune_threshold`) and saved with the model as
`match.json` (head type, threshold, parameters) plus `match_head.safetensors` for the classifier's weights.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from cliptune.errors import ModelLoadError
from cliptune.utils.atomic import write_text_atomic
from cliptune.utils.registry import Registry

MATCH_FILE = "match.json"
HEAD_WEIGHTS = "match_head.safetensors"
FORMAT_VERSION = 1

MATCH_HEADS: Registry[type["MatchHead"]] = Registry("match head")


class MatchHead(nn.Module, ABC):
    """logits(img, txt) → [B] for BCE training; score(img, txt) → [B] the reported score; a match when
    score ≥ threshold."""

    kind = "base"
    has_weights = False  # True when the weights must be saved (beyond the parameters in `params()`)

    def __init__(self, threshold: float | None = None):
        super().__init__()
        self.threshold = None if threshold is None else float(threshold)

    @abstractmethod
    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Raw match logits for aligned rows of image and text embeddings (trained with BCE)."""

    @abstractmethod
    def score(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """The reported score, compared with the threshold (higher: more likely a match)."""

    def params(self) -> dict:
        """Constructor arguments that rebuild this head (without the threshold)."""
        return {}

    def predict(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            raise ValueError("this match head has no threshold yet; tune one on validation pairs")
        return self.score(image_emb, text_emb) >= self.threshold


@MATCH_HEADS.register("score")
class ScoreHead(MatchHead):
    kind = "score"

    def __init__(self, embed_dim: int | None = None, threshold: float | None = None, init_scale: float = 10.0,
                 init_bias: float = -2.5):
        super().__init__(threshold)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def score(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return (image_emb * text_emb).sum(dim=-1)

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * self.score(image_emb, text_emb) + self.bias

    def params(self) -> dict:
        return {"init_scale": float(self.log_scale.detach().exp()), "init_bias": float(self.bias.detach())}


@MATCH_HEADS.register("classifier")
class ClassifierHead(MatchHead):
    kind = "classifier"
    has_weights = True

    def __init__(self, embed_dim: int, threshold: float | None = 0.5, hidden: int = 256, dropout: float = 0.1):
        super().__init__(threshold)
        self.embed_dim, self.hidden, self.dropout = int(embed_dim), int(hidden), float(dropout)
        self.mlp = nn.Sequential(nn.Linear(4 * self.embed_dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                                 nn.Linear(self.hidden, 1))

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        features = torch.cat([image_emb, text_emb, image_emb * text_emb, (image_emb - text_emb).abs()], dim=-1)
        return self.mlp(features).squeeze(-1)

    def score(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(image_emb, text_emb))

    def params(self) -> dict:
        return {"embed_dim": self.embed_dim, "hidden": self.hidden, "dropout": self.dropout}


def build_match_head(kind: str, embed_dim: int | None = None, **params) -> MatchHead:
    cls = MATCH_HEADS.get(kind)
    return cls(embed_dim=embed_dim, **params)


# ---- match.json ---------------------------------------------------------------------------------------------------
def match_dir(path: str | os.PathLike) -> Path | None:
    """The folder holding `match.json` for a model or run directory (`<run>/model/` first), or None."""
    path = Path(path).expanduser()
    for candidate in (path / "model", path):
        if (candidate / MATCH_FILE).is_file():
            return candidate
    return None


def save_match_head(head: MatchHead, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the head next to the model: weights first (classifier), `match.json` last and atomically."""
    from cliptune.models.weights import save_safetensors_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = None
    if head.has_weights:
        state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_safetensors_atomic(state, directory / HEAD_WEIGHTS)
        weights = HEAD_WEIGHTS
    meta = {"format_version": FORMAT_VERSION, "head": head.kind, "threshold": head.threshold,
            "params": head.params(), "weights": weights, **(extra or {})}
    return write_text_atomic(directory / MATCH_FILE, json.dumps(meta, indent=2))


def load_match_head(path: str | os.PathLike) -> MatchHead | None:
    """The head saved in a model or run directory, or None when it has no `match.json`."""
    from cliptune.models.weights import load_state_dict_file

    directory = match_dir(path)
    if directory is None:
        return None
    file = directory / MATCH_FILE
    try:
        meta = json.loads(file.read_text())
        kind, params, threshold = meta["head"], dict(meta.get("params") or {}), meta.get("threshold")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{file}: unreadable match head metadata ({err})") from err
    if kind not in MATCH_HEADS:
        raise ModelLoadError(f"{file}: unknown match head {kind!r}; known: {', '.join(MATCH_HEADS.names())}")
    embed_dim = params.pop("embed_dim", None)
    try:
        head = build_match_head(kind, embed_dim, threshold=threshold, **params)
    except TypeError as err:
        raise ModelLoadError(f"{file}: bad parameters for match head {kind!r} ({err})") from err
    if meta.get("weights"):
        state = load_state_dict_file(directory / meta["weights"])
        try:
            head.load_state_dict(state)
        except RuntimeError as err:
            raise ModelLoadError(f"{directory / meta['weights']}: does not fit match head {kind!r} ({err})") from err
    return head.eval()
