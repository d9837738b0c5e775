"""InfoNCE with mined hard negatives (as in ANCE, Xiong et al. 2021, and NegCLIP, Yuksekgonul et al. 2023).

Each image's image→text softmax gets `num_negatives` extra columns: captions of other images mined for it
(`train/mining.py`: nearest captions in a FAISS index over the training captions, false negatives excluded), so
each image is contrasted with the batch *and* with the captions it is most easily confused with. The text→image
direction is plain InfoNCE (a mined caption has no positive image in the batch). With `num_negatives: 0` (or no
mined negatives in the batch) this is exactly `infonce`.

What the trainer puts in the `TrainBatch` (declared by `capabilities.mined_negatives`):
  negatives    LongTensor [B, n]: caption indices mined for the batch's images (−1 = none, masked out)
  negative_emb [B, n, D] L2-normalised embeddings of those captions, *with grad* (zeros where −1)
Mining is refreshed every `refresh_epochs` epochs (`needs_refresh(epoch)`; 0 = mine once before the first epoch);
the trainer mines with `train.mining.mine_for(objective, ...)`, which reads this objective's settings.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cliptune.errors import UsageError
from cliptune.objectives.batch import Capabilities, ObjectiveBase, TrainBatch
from cliptune.objectives.registry import OBJECTIVES

STRATEGIES = ("semantic", "random")  # see train/mining.py


@OBJECTIVES.register("hard_negatives")
class HardNegatives(ObjectiveBase):
    def __init__(self, num_negatives: int = 4, strategy: str = "semantic", false_negative_threshold: float = 0.9,
                 refresh_epochs: int = 1, label_smoothing: float = 0.0, log_mined: bool = True):
        super().__init__()
        if strategy not in STRATEGIES:
            raise UsageError(f"loss.params.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if num_negatives < 0 or refresh_epochs < 0:
            raise UsageError("loss.params.num_negatives and refresh_epochs must be >= 0")
        self.num_negatives = int(num_negatives)
        self.strategy = strategy
        self.false_negative_threshold = float(false_negative_threshold)
        self.refresh_epochs = int(refresh_epochs)
        self.label_smoothing = label_smoothing
        self.log_mined = log_mined

    # ---- mining schedule ---------------------------------------------------------------------------------------
    def needs_refresh(self, epoch: int) -> bool:
        """True at the start of epochs whose negatives must be (re)mined with the current model."""
        if self.num_negatives == 0:
            return False
        if self.refresh_epochs == 0:
            return epoch == 0
        return epoch % self.refresh_epochs == 0

    # ---- the loss ------------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mined_negatives=self.num_negatives > 0)

    def _negative_emb(self, batch: TrainBatch, n_rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        negatives, emb = batch.negatives, batch.negative_emb
        if negatives is None or self.num_negatives == 0 or negatives.numel() == 0:
            return None
        negatives = negatives.reshape(n_rows, -1)
        valid = negatives >= 0
        if not bool(valid.any()):  # nothing mined for these images: plain InfoNCE
            return None
        if emb is None:
            raise UsageError("hard_negatives: the batch has mined 'negatives' but no 'negative_emb' (their "
                             "embeddings are computed by the trainer, objectives.batch.embed_negatives)")
        return emb, valid

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, batch: TrainBatch | dict | None = None
                ) -> dict[str, torch.Tensor]:
        batch = TrainBatch.coerce(batch)
        logits = logit_scale * image_emb @ text_emb.T
        if logit_bias is not None:
            logits = logits + logit_bias
        n = logits.shape[0]
        labels = torch.arange(n, device=logits.device)
        loss_t2i = F.cross_entropy(logits.T, labels, label_smoothing=self.label_smoothing)
        mined = self._negative_emb(batch, n)
        logits_i2t = logits
        out: dict[str, torch.Tensor] = {}
        if mined is not None:
            neg_emb, valid = mined
            neg_emb = neg_emb.to(image_emb.dtype)
            extra = logit_scale * torch.einsum("bd,bnd->bn", image_emb, neg_emb)
            if logit_bias is not None:
                extra = extra + logit_bias
            extra = extra.masked_fill(~valid.to(extra.device), float("-inf"))
            logits_i2t = torch.cat([logits, extra], dim=1)
            with torch.no_grad():  # how often a mined caption outscores the true one (a hardness gauge)
                pos = logits.diagonal().unsqueeze(1)
                out["hard_negative_win_rate"] = ((extra > pos) & valid.to(extra.device)).float().sum() / \
                    valid.sum().clamp(min=1)
        loss_i2t = _cross_entropy(logits_i2t, labels, self.label_smoothing)
        out["loss"] = (loss_i2t + loss_t2i) / 2
        return out


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """F.cross_entropy, except that label smoothing spreads over the finite (unmasked) columns of each row only."""
    finite = torch.isfinite(logits)
    if label_smoothing == 0 or bool(finite.all()):
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    logp = F.log_softmax(logits, dim=1)
    nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    smooth = -logp.masked_fill(~finite, 0).sum(dim=1) / finite.sum(dim=1)
    return ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()
