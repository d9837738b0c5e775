"""Match detection loss for labelled pairs (`task: match`): binary cross-entropy on a match head's logits.

Every row of the batch is a labelled (image, text, label) pair, label 1 = the text fits the image. The loss is BCE
on the head's logits for those pairs plus, for each *positive* row i, the in-batch pairs (image i, text j ≠ i) as
extra negatives (the sigmoid view of in-batch negatives, as SigLIP, Zhai et al. 2023), weighted by
`in_batch_weight`. Pairs that could be true matches are left out of the extra negatives: the trainer passes
`batch.negative_mask` ([B, B] bool, see `train/match.py`) excluding same-image rows and texts known to match
image i; without it, all off-diagonal pairs of positive rows are used.

The head lives on the model (`model.match_head`, created by `attach(model)`, which also freezes the model's unused
logit scale/bias), so it is optimised and checkpointed with it; `batch.labels` ([B] 0/1) holds the labels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cliptune.errors import UsageError
from cliptune.models.match_head import MATCH_HEADS, build_match_head
from cliptune.objectives.batch import Capabilities, ObjectiveBase, TrainBatch
from cliptune.objectives.hooks import freeze_logit_parameters
from cliptune.objectives.registry import OBJECTIVES


@OBJECTIVES.register("match")
class MatchLoss(ObjectiveBase):
    capabilities = Capabilities(labels=True, adds_parameters=True)

    def __init__(self, head: str = "score", in_batch_negatives: bool = True, in_batch_weight: float = 1.0,
                 pos_weight: float | None = None, **head_params):
        super().__init__()
        if head not in MATCH_HEADS:
            raise UsageError(f"loss.params.head must be one of {', '.join(MATCH_HEADS.names())}, got {head!r}")
        self.head_kind = head
        self.head_params = head_params
        self.in_batch_negatives = in_batch_negatives
        self.in_batch_weight = float(in_batch_weight)
        self.pos_weight = pos_weight
        object.__setattr__(self, "head", None)  # a reference to model.match_head, not a submodule of the loss

    def attach(self, model: nn.Module) -> None:
        """Create `model.match_head` (kept if the model already has one of this kind) and use it. The head has its
        own scale and bias, so the model's logit scale/bias are frozen (unused)."""
        freeze_logit_parameters(model)
        head = getattr(model, "match_head", None)
        if head is None or getattr(head, "kind", None) != self.head_kind:
            param = next(model.parameters())
            head = build_match_head(self.head_kind, getattr(model, "embed_dim", None), **self.head_params)
            model.match_head = head.to(param.device)
        self.use_head(model.match_head)

    def use_head(self, head: nn.Module) -> None:
        """Score pairs with `head` (held by reference: it belongs to the model, not to the loss)."""
        object.__setattr__(self, "head", head)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None, batch: TrainBatch | dict | None = None
                ) -> dict[str, torch.Tensor]:
        batch = TrainBatch.coerce(batch)
        head = self.head
        if head is None:
            raise UsageError("loss 'match' has no head: the trainer must call objective.attach(model) first")
        if batch.labels is None:
            raise UsageError("loss 'match' needs batch.labels (1 = match, 0 = mismatch) for every pair")
        labels = batch.labels.to(image_emb.device, image_emb.dtype)
        pos_weight = None if self.pos_weight is None else labels.new_tensor(float(self.pos_weight))
        loss_pairs = F.binary_cross_entropy_with_logits(head.logits(image_emb, text_emb), labels,
                                                        pos_weight=pos_weight)
        out = {"loss_pairs": loss_pairs.detach()}
        loss = loss_pairs
        n = labels.shape[0]
        if self.in_batch_negatives and self.in_batch_weight > 0 and n > 1:
            mask = batch.negative_mask
            if mask is None:
                mask = (labels > 0.5).unsqueeze(1) & ~torch.eye(n, dtype=torch.bool, device=labels.device)
            rows, cols = mask.to(image_emb.device).nonzero(as_tuple=True)
            if len(rows):
                extra = head.logits(image_emb[rows], text_emb[cols])
                loss_extra = F.binary_cross_entropy_with_logits(extra, torch.zeros_like(extra))
                loss = loss + self.in_batch_weight * loss_extra
                out["loss_in_batch"] = loss_extra.detach()
        out["loss"] = loss
        return out
