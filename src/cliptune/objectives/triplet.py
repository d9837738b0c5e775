"""Triplet margin loss on cosine distance with in-batch mining, both directions.

For an anchor a (an image, then a caption), its positive p (row a of the other side) and a negative n (any other row
of the other side), with d = 1 − cos: ℓ = max(0, d(a, p) − d(a, n) + margin). Mining picks the negatives:

* `hardest`   — the closest negative per anchor (VSE++, Faghri et al. 2018);
* `semi-hard` — per anchor, the closest negative still farther than the positive; when every negative is closer
  than the positive, the farthest of them (FaceNet, Schroff et al. 2015, as TF-Addons' `triplet_semihard_loss`);
* `all`       — every (anchor, negative) triplet, averaged over all of them (zero-loss ones included).

The loss is the mean over anchors (over triplets for `all`) per direction, averaged over the two directions. The
logit scale and bias are unused, so `attach(model)` freezes them.
"""

from __future__ import annotations

import torch
from torch import nn

from cliptune.errors import UsageError
from cliptune.objectives.hooks import freeze_logit_parameters
from cliptune.objectives.batch import Capabilities, ObjectiveBase, TrainBatch
from cliptune.objectives.registry import OBJECTIVES

MINING = ("hardest", "semi-hard", "all")


def _direction(sim: torch.Tensor, margin: float, mining: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows are anchors, columns the other side; the diagonal holds the positives. Returns (loss, active fraction)."""
    n = sim.shape[0]
    pos = sim.diagonal().unsqueeze(1)  # [n, 1]
    off = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    # d(a,p) − d(a,n) = cos(a,n) − cos(a,p)
    hinge = (sim - pos + margin).clamp(min=0)
    if mining == "all":
        per = hinge[off]
        return per.mean(), (per > 0).float().mean()
    neg_inf = torch.finfo(sim.dtype).min
    if mining == "hardest":
        chosen = sim.masked_fill(~off, neg_inf).max(dim=1).values
    else:  # semi-hard
        farther = off & (sim < pos)  # negatives farther from the anchor than its positive
        closest_farther = sim.masked_fill(~farther, neg_inf).max(dim=1).values
        farthest = sim.masked_fill(~off, torch.finfo(sim.dtype).max).min(dim=1).values
        chosen = torch.where(farther.any(dim=1), closest_farther, farthest)
    per = (chosen - pos.squeeze(1) + margin).clamp(min=0)
    return per.mean(), (per > 0).float().mean()


@OBJECTIVES.register("triplet")
class Triplet(ObjectiveBase):
    capabilities = Capabilities(adds_parameters=True)  # freezes the unused logit scale/bias

    def __init__(self, margin: float = 0.2, mining: str = "hardest"):
        super().__init__()
        if mining not in MINING:
            raise UsageError(f"loss.params.mining must be one of {', '.join(MINING)}, got {mining!r}")
        self.margin = float(margin)
        self.mining = mining

    def attach(self, model: nn.Module) -> None:
        freeze_logit_parameters(model)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None, batch: TrainBatch | dict | None = None
                ) -> dict[str, torch.Tensor]:
        if image_emb.shape[0] < 2:
            raise UsageError("loss 'triplet' needs at least 2 pairs per batch (negatives come from the batch)")
        sim = image_emb @ text_emb.T
        loss_i2t, active_i2t = _direction(sim, self.margin, self.mining)
        loss_t2i, active_t2i = _direction(sim.T, self.margin, self.mining)
        return {"loss": (loss_i2t + loss_t2i) / 2, "active": ((active_i2t + active_t2i) / 2).detach()}
