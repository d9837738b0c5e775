"""Objectives: InfoNCE and SigLIP equal open_clip's reference losses; triplet mining on hand-computed cases;
the attach hook puts SigLIP's scale and bias on the model."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cliptune.errors import UsageError
from cliptune.objectives import attach_objective, build_objective


def _features(n=8, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=gen), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(n, d, generator=gen), dim=-1)
    return img, txt


def test_infonce_equals_open_clip_clip_loss():
    from open_clip.loss import ClipLoss

    img, txt = _features()
    for scale in (1.0, 1 / 0.07, 100.0):
        s = torch.tensor(scale)
        ours = build_objective("infonce")(img, txt, s)["loss"]
        ref = ClipLoss()(img, txt, s)
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_siglip_equals_open_clip_siglip_loss():
    from open_clip.loss import SigLipLoss

    img, txt = _features(n=6)
    for scale, bias in ((10.0, -10.0), (3.0, 0.5), (50.0, -4.0)):
        s, b = torch.tensor(scale), torch.tensor(bias)
        ours = build_objective("siglip")(img, txt, s, b)["loss"]
        ref = SigLipLoss()(img, txt, s, b)
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


class _Stub(nn.Module):
    def __init__(self, scale=1 / 0.07, bias=None):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.logit_bias = None if bias is None else nn.Parameter(torch.tensor(float(bias)))


def test_siglip_attach_creates_bias_and_resets_scale():
    model = _Stub()
    scale_param = model.logit_scale
    objective = build_objective("siglip")
    attach_objective(objective, model)
    assert model.logit_scale is scale_param  # re-initialised in place (a shared checkpoint parameter stays shared)
    assert model.logit_scale.item() == pytest.approx(math.log(10))
    assert isinstance(model.logit_bias, nn.Parameter) and model.logit_bias.item() == pytest.approx(-10.0)
    assert "logit_bias" in dict(model.named_parameters()) and "logit_bias" in model.state_dict()
    # the loss trains both
    img, txt = _features(4)
    objective(img, txt, model.logit_scale.exp(), model.logit_bias)["loss"].backward()
    assert model.logit_scale.grad is not None and model.logit_bias.grad is not None


def test_siglip_attach_keeps_a_siglip_models_scale_and_bias():
    model = _Stub(scale=117.0, bias=-12.5)
    attach_objective(build_objective("siglip"), model)
    assert model.logit_scale.exp().item() == pytest.approx(117.0, rel=1e-5)
    assert model.logit_bias.item() == pytest.approx(-12.5)


def test_siglip_on_tiny_clip_bias_is_optimised():
    from cliptune.models.registry import load_model
    from cliptune.train.optim import build_optimizer

    model = load_model("tiny-clip")
    attach_objective(build_objective("siglip"), model)
    assert model.logit_scale is model.hf_model.logit_scale and model.scale().item() == pytest.approx(10.0, rel=1e-5)
    optimised = {id(p) for g in build_optimizer(model, 1e-4, 0.1).param_groups for p in g["params"]}
    assert id(model.logit_bias) in optimised


def test_siglip_without_bias_is_a_clear_error():
    img, txt = _features(3)
    with pytest.raises(UsageError, match="attach"):
        build_objective("siglip")(img, txt, torch.tensor(10.0))


def test_attach_is_a_noop_for_objectives_without_it():
    model = _Stub()
    before = model.logit_scale.item()
    attach_objective(build_objective("infonce"), model)
    assert model.logit_scale.item() == before and model.logit_bias is None


# ---- triplet: image_emb = I, text_emb = Sᵀ makes the similarity matrix exactly S --------------------------------
S = torch.tensor([[0.9, 0.8, 0.1],
                  [0.3, 0.5, 0.6],
                  [0.2, 0.85, 0.7]], dtype=torch.float64)
# i2t hinges (margin 0.2), per anchor row: [.1, 0], [0, .3], [0, .35]; t2i (columns): [0, 0], [.5, .55], [0, .1]
EXPECTED = {
    "hardest": ((0.1 + 0.3 + 0.35) / 3 + (0.0 + 0.55 + 0.1) / 3) / 2,
    "all": ((0.1 + 0.3 + 0.35) / 6 + (0.5 + 0.55 + 0.1) / 6) / 2,
    # i2t: closest negative farther than the positive: .8 (→.1), .3 (→0), .2 (→0);
    # t2i: .3 (→0), none farther so the farthest .8 (→.5), .6 (→.1)
    "semi-hard": ((0.1 + 0.0 + 0.0) / 3 + (0.0 + 0.5 + 0.1) / 3) / 2,
}


@pytest.mark.parametrize("mining", ["hardest", "semi-hard", "all"])
def test_triplet_hand_computed(mining):
    loss = build_objective("triplet", margin=0.2, mining=mining)(torch.eye(3, dtype=torch.float64), S.T.clone())
    assert loss["loss"].item() == pytest.approx(EXPECTED[mining], abs=1e-9)


def test_triplet_zero_when_separated_and_rejects_unknown_mining():
    img = torch.eye(4)
    assert build_objective("triplet", mining="all")(img, img.clone())["loss"].item() == 0.0
    with pytest.raises(UsageError):
        build_objective("triplet", mining="easiest")


def test_objectives_that_ignore_the_logit_scale_freeze_it():
    for kind in ("triplet", "match"):
        model = _Stub(bias=-3.0)
        model.embed_dim = 2
        attach_objective(build_objective(kind), model)
        assert not model.logit_scale.requires_grad and not model.logit_bias.requires_grad
        assert model.linear.weight.requires_grad


def test_triplet_gradient_reaches_both_sides():
    img, txt = _features(5)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    build_objective("triplet", margin=1.0)(img, txt)["loss"].backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
