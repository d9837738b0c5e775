"""Pairwise sigmoid loss, SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").

Every image–text pair of the batch is an independent binary problem: label +1 on the diagonal, −1 elsewhere,
loss = −Σ log σ(label · (t·cos + b)) / B. No softmax over the batch, so no global normalisation. The learnable
scale t (init 10) and bias b (init −10, which offsets the B² − B negatives against B positives at the start) live on the
model: `attach(model)` creates them where the model has none.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cliptune.errors import UsageError
from cliptune.objectives.batch import Capabilities, ObjectiveBase, TrainBatch
from cliptune.objectives.registry import OBJECTIVES


@OBJECTIVES.register("siglip")
class SigLIP(ObjectiveBase):
    capabilities = Capabilities(adds_parameters=True)

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.init_scale = float(init_scale)
        self.init_bias = float(init_bias)

    def attach(self, model: nn.Module) -> None:
        """Give a model without a logit bias SigLIP's starting point: scale := init_scale (in place, so a parameter
        shared with a wrapped checkpoint stays shared) and a new `logit_bias` parameter := init_bias. A model that
        already has a bias (a SigLIP checkpoint) keeps its trained scale and bias."""
        if getattr(model, "logit_bias", None) is not None:
            return
        scale = model.logit_scale
        with torch.no_grad():
            scale.fill_(math.log(self.init_scale))
        model.logit_bias = nn.Parameter(torch.tensor(self.init_bias, dtype=scale.dtype, device=scale.device),
                                        requires_grad=scale.requires_grad)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, batch: TrainBatch | dict | None = None
                ) -> dict[str, torch.Tensor]:
        if logit_bias is None:
            raise UsageError("loss 'siglip' needs a logit bias: the trainer must call objective.attach(model) "
                             "before building the optimiser")
        logits = logit_scale * image_emb @ text_emb.T + logit_bias
        n = logits.shape[0]
        labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
        loss = -F.logsigmoid(labels * logits).sum() / n
        return {"loss": loss, "logit_bias": logit_bias.detach()}
