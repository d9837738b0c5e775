"""Projection heads that map a backbone's pooled feature into the shared embedding space.

`linear` is CLIP's choice (Radford et al. 2021). `mlp` (Linear → GELU → Linear, optional BatchNorm) gives a
frozen backbone more room to adapt, which matters when only the heads train.
"""

from __future__ import annotations

from torch import nn

from cliptune.utils.registry import Registry

HEADS: Registry = Registry("projection head")


@HEADS.register("linear")
def linear_head(in_dim: int, out_dim: int, hidden_dim: int | None = None, batch_norm: bool = False,
                dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim, bias=False))


@HEADS.register("mlp")
def mlp_head(in_dim: int, out_dim: int, hidden_dim: int | None = None, batch_norm: bool = False,
             dropout: float = 0.0) -> nn.Module:
    hidden = hidden_dim or max(in_dim, out_dim)
    layers: list[nn.Module] = [nn.Dropout(dropout), nn.Linear(in_dim, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.GELU(), nn.Linear(hidden, out_dim)]
    return nn.Sequential(*layers)


def build_head(kind: str, in_dim: int, out_dim: int, **kw) -> nn.Module:
    return HEADS.get(kind)(in_dim, out_dim, **kw)
