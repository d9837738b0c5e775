"""GradCache gives the full-batch parameter gradients while encoding a few pairs at a time, dropout included."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cliptune.objectives import attach_objective, build_objective
from cliptune.train.gradcache import chunks, gradcache_step


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradcache_equals_full_batch_on_tiny_clip():
    from PIL import Image

    from cliptune.models.registry import load_model

    model = load_model("tiny-clip").eval()
    gen = torch.Generator().manual_seed(0)
    transform = model.image_transform(train=False)
    pixels = torch.stack([transform(Image.fromarray((torch.rand(64, 64, 3, generator=gen) * 255).byte().numpy()))
                          for _ in range(6)])
    tokens = model.tokenize([f"a {c} {s} on a {g} background" for c, s, g in
                             zip(["red", "green", "blue", "pink", "black", "white"],
                                 ["square", "circle", "star", "cross", "dot", "ring"],
                                 ["light", "dark", "light", "dark", "plain", "busy"])])
    objective = build_objective("infonce")

    model.zero_grad()
    img, txt = model.encode_image(pixels), model.encode_text(tokens)
    full_loss = objective(img, txt, model.scale())["loss"]
    full_loss.backward()
    full = _grads(model)

    model.zero_grad()
    loss = gradcache_step(lambda pos: model.encode_image(pixels[pos]),
                          lambda pos: model.encode_text({k: v[pos] for k, v in tokens.items()}),
                          objective, n=6, mini_batch=2, logit_scale=model.scale())
    cached = _grads(model)
    assert loss == pytest.approx(full_loss.item(), abs=1e-6)
    assert full.keys() == cached.keys() and "logit_scale" in cached
    for name in full:
        torch.testing.assert_close(cached[name], full[name], rtol=1e-5, atol=1e-5, msg=name)


class _Toy(nn.Module):
    """Two dropout towers, so the second pass must replay the first pass's masks."""

    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 8))
        self.text = nn.Sequential(nn.Linear(7, 16), nn.Dropout(0.5), nn.Linear(16, 8))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = None


@pytest.mark.parametrize("loss", ["infonce", "siglip", "triplet"])
def test_dropout_is_replayed_and_rng_continues(loss):
    torch.manual_seed(0)
    model = _Toy().train()
    objective = build_objective(loss)
    attach_objective(objective, model)
    x_img, x_txt = torch.randn(7, 5), torch.randn(7, 7)
    enc_i = lambda pos: F.normalize(model.image(x_img[pos]), dim=-1)  # noqa: E731
    enc_t = lambda pos: F.normalize(model.text(x_txt[pos]), dim=-1)  # noqa: E731
    parts = chunks(7, 3)

    # reference: the same mini-batches, in the same order, with a graph kept for all of them
    torch.manual_seed(123)
    model.zero_grad()
    img = torch.cat([enc_i(p) for p in parts])
    txt = torch.cat([enc_t(p) for p in parts])
    ref_loss = objective(img, txt, model.logit_scale.exp(), model.logit_bias)["loss"]
    ref_loss.backward()
    ref, ref_rng = _grads(model), torch.get_rng_state()

    torch.manual_seed(123)
    model.zero_grad()
    loss_value = gradcache_step(enc_i, enc_t, objective, 7, 3, model.logit_scale.exp(), model.logit_bias)
    got = _grads(model)
    assert loss_value == pytest.approx(ref_loss.item(), abs=1e-6)
    assert torch.equal(torch.get_rng_state(), ref_rng)  # the training RNG stream advanced exactly once
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)
    if loss == "siglip":
        assert "logit_bias" in got


def test_scale_loss_and_chunks():
    model = _Toy().eval()
    x_img, x_txt = torch.randn(4, 5), torch.randn(4, 7)
    enc_i = lambda pos: F.normalize(model.image(x_img[pos]), dim=-1)  # noqa: E731
    enc_t = lambda pos: F.normalize(model.text(x_txt[pos]), dim=-1)  # noqa: E731
    objective = build_objective("infonce")
    gradcache_step(enc_i, enc_t, objective, 4, 4, model.logit_scale.exp())
    once = _grads(model)
    model.zero_grad()
    gradcache_step(enc_i, enc_t, objective, 4, 1, model.logit_scale.exp(), scale_loss=lambda l: l * 3)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, 3 * once[name], rtol=1e-5, atol=1e-6)
    assert [c.tolist() for c in chunks(5, 2)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        chunks(5, 0)
