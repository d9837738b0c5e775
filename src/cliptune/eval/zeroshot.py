"""Zero-shot classification over precomputed embeddings: class prototypes from prompt templates, logits, accuracy.

A class is represented by the text embedding of its name, averaged over several prompt templates ("a photo of a
{}.", "a blurry photo of a {}.", ...). Averaging L2-normalised embeddings and renormalising the mean is the prompt
ensembling of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
section 3.1.4), which gained ImageNet accuracy over a single prompt at no inference cost.

Pure functions: no model code. Text embeddings come in as a tensor or from a caller-supplied encoding function.

Ties in `topk_accuracy` are pessimistic, as in `cliptune.eval.retrieval`: the true class counts as ranked after
every class with an equal logit, so a collapsed model (all logits equal) scores 0, never a lucky draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "class_embeddings_from_templates",
    "per_class_accuracy",
    "true_class_ranks",
    "topk_accuracy",
    "zeroshot_logits",
]

TextEncoder = Callable[[list[str]], torch.Tensor]  # prompts -> [len(prompts), d] embeddings


def _check_matrix(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D floating-point tensor [n, d], got {shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return x.detach()


def _fill(template: str, classname: str) -> str:
    """`str.replace`, not `str.format`: a template may contain other braces ("{{}}", JSON) without breaking."""
    return template.replace("{}", classname)


def class_embeddings_from_templates(
    text_emb: torch.Tensor | TextEncoder,
    n_templates: int | None = None,
    *,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
) -> torch.Tensor:
    """One L2-normalised prototype per class: the renormalised mean of its normalised template embeddings.

    `text_emb` is either
      * a tensor `[C, T, d]`, or `[C * T, d]` class-major (row `c * T + t` = class c in template t) with
        `n_templates=T`, or
      * a function mapping a list of prompts to `[n, d]` embeddings, with `classnames` and `templates`; it is called
        once per class so memory stays at `T x d` whatever the number of classes.
    Returns `[C, d]` float32 (float64 if the embeddings are float64).
    """
    if callable(text_emb) and not isinstance(text_emb, torch.Tensor):
        if not classnames or not templates:
            raise ValueError("an encoding function needs non-empty classnames and templates")
        rows = [_prototype(_check_matrix(text_emb([_fill(t, name) for t in templates]), "encoded prompts"))
                for name in classnames]
        return torch.stack(rows)
    if not isinstance(text_emb, torch.Tensor):
        raise ValueError(f"text_emb must be a tensor or a function, got {type(text_emb).__name__}")
    if text_emb.dim() == 2:
        if not n_templates or n_templates < 1 or text_emb.shape[0] % n_templates:
            raise ValueError(f"text_emb has {text_emb.shape[0]} rows, not a multiple of n_templates={n_templates}")
        text_emb = text_emb.reshape(text_emb.shape[0] // n_templates, n_templates, text_emb.shape[1])
    if text_emb.dim() != 3 or text_emb.shape[0] == 0 or text_emb.shape[1] == 0:
        raise ValueError(f"text_emb must be [C, T, d] or [C*T, d], got shape {tuple(text_emb.shape)}")
    return _prototype(text_emb.detach())


def _prototype(emb: torch.Tensor) -> torch.Tensor:
    """Mean over the template axis (-2) of normalised embeddings, renormalised."""
    emb = emb.float() if emb.dtype != torch.float64 else emb
    return F.normalize(F.normalize(emb, dim=-1).mean(dim=-2), dim=-1)


def zeroshot_logits(image_emb: torch.Tensor, class_emb: torch.Tensor, scale: float | torch.Tensor = 1.0,
                    bias: float | torch.Tensor | None = None) -> torch.Tensor:
    """`scale * cos(image, class) (+ bias)` as `[N, C]`; both sides are L2-normalised here, so raw input is fine.

    With the model's logit scale, `softmax(logits)` are the class probabilities CLIP reports.
    """
    image_emb = _check_matrix(image_emb, "image_emb")
    class_emb = _check_matrix(class_emb, "class_emb")
    if image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"embedding dimensions differ: images d={image_emb.shape[1]}, classes d={class_emb.shape[1]}")
    dtype = torch.float64 if torch.float64 in (image_emb.dtype, class_emb.dtype) else torch.float32
    logits = F.normalize(image_emb.to(dtype), dim=-1) @ F.normalize(class_emb.to(dtype), dim=-1).T
    logits = logits * torch.as_tensor(scale, dtype=dtype, device=logits.device)
    if bias is not None:
        logits = logits + torch.as_tensor(bias, dtype=dtype, device=logits.device)
    return logits


def _check_labels(logits: torch.Tensor, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _check_matrix(logits, "logits")
    labels = torch.as_tensor(labels, device=logits.device)
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be 1-D with one entry per row of logits ({logits.shape[0]}), "
                         f"got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if bool(((labels < 0) | (labels >= logits.shape[1])).any()):
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}")
    return logits, labels


def true_class_ranks(logits: torch.Tensor, labels: object) -> torch.Tensor:
    """1-based rank of the true class per row: 1 + number of other classes with a logit >= the true one."""
    logits, labels = _check_labels(logits, labels)
    true = logits.gather(1, labels[:, None])
    return (logits >= true).sum(dim=1)  # the true class itself counts once, which is the "1 +"


def topk_accuracy(logits: torch.Tensor, labels: object, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose true class is among the `k` highest logits, as `{"top1": ..., "top5": ...}`.

    A `k` at or above the number of classes is trivially 1.0 and is reported as such (not dropped), so the keys
    are always the ones asked for.
    """
    if isinstance(ks, int) or not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    ranks = true_class_ranks(logits, labels)
    return {f"top{k}": float((ranks <= k).double().mean()) for k in ks}


def per_class_accuracy(logits: torch.Tensor, labels: object, k: int = 1) -> list[tuple[float | None, int]]:
    """Per class: (top-k accuracy over its images, number of images); accuracy is None for a class with none."""
    ranks = true_class_ranks(logits, labels)
    labels = torch.as_tensor(labels).long().to(ranks.device)
    out: list[tuple[float | None, int]] = []
    for c in range(logits.shape[1]):
        mine = labels == c
        n = int(mine.sum())
        out.append((float((ranks[mine] <= k).double().mean()) if n else None, n))
    return out
