"""Objectives by name (`loss.type`). Every objective is an nn.Module called as

    objective(image_emb, text_emb, logit_scale, logit_bias=None, batch=None) -> {"loss": tensor, ...}

with L2-normalised embeddings of matching rows (row i of each side is a positive pair), the *exponentiated* logit
scale and the optional logit bias. Extra entries in the returned dict are logged.
"""

from __future__ import annotations

from torch import nn

from cliptune.utils.registry import Registry

OBJECTIVES: Registry = Registry("loss type")


def build_objective(kind: str, **params) -> nn.Module:
    import cliptune.objectives  # noqa: F401  (registers the built-in objectives)

    return OBJECTIVES.get(kind)(**params)
