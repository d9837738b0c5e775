"""Optional objective hooks the trainer calls around the plain `objective(img, txt, scale, bias, batch)` contract.

`attach(model)` runs once, after the model is built and moved to its device and before the optimiser is built (and
before a checkpoint is loaded on resume): an objective that needs parameters of its own (SigLIP's logit bias, the match
head) puts them *on the model*, so they are optimised, checkpointed and exported with it, and DDP sees no parameter
outside the wrapped module.
"""

from __future__ import annotations

from torch import nn


def attach_objective(objective: nn.Module, model: nn.Module) -> None:
    """Call `objective.attach(model)` when the objective defines it; a no-op otherwise."""
    attach = getattr(objective, "attach", None)
    if callable(attach):
        attach(model)


def freeze_logit_parameters(model: nn.Module) -> None:
    """For objectives that ignore the model's logit scale and bias: stop training them, so they get no optimiser
    state and distributed training sees no parameter without a gradient (DDP's unused-parameter error)."""
    for name in ("logit_scale", "logit_bias"):
        param = getattr(model, name, None)
        if isinstance(param, nn.Parameter):
            param.requires_grad_(False)
