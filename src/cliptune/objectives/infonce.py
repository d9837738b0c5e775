"""Symmetric InfoNCE, the CLIP loss (Radford et al. 2021; van den Oord et al. 2018).

Cross-entropy of the image→text and text→image similarity matrices against the diagonal, averaged over the two
directions. The in-batch negatives are the other pairs of the batch, so the batch size sets the number of negatives.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cliptune.objectives.batch import ObjectiveBase, TrainBatch
from cliptune.objectives.registry import OBJECTIVES


@OBJECTIVES.register("infonce")
class InfoNCE(ObjectiveBase):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, batch: TrainBatch | dict | None = None
                ) -> dict[str, torch.Tensor]:
        rows = TrainBatch.coerce(batch).local_rows
        if rows is not None:  # open_clip's local_loss: this process scores only its own queries against all keys
            start, stop = rows
            per_image = logit_scale * image_emb[start:stop] @ text_emb.T
            per_text = logit_scale * text_emb[start:stop] @ image_emb.T
            labels = torch.arange(start, stop, device=image_emb.device)
        else:
            per_image = logit_scale * image_emb @ text_emb.T
            per_text = per_image.T
            labels = torch.arange(per_image.shape[0], device=per_image.device)
        if logit_bias is not None:
            per_image, per_text = per_image + logit_bias, per_text + logit_bias
        loss_i2t = F.cross_entropy(per_image, labels, label_smoothing=self.label_smoothing)
        loss_t2i = F.cross_entropy(per_text, labels, label_smoothing=self.label_smoothing)
        return {"loss": (loss_i2t + loss_t2i) / 2}
