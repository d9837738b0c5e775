"""LoRA on every backend: only adapters (+ heads, logit scale) get gradients; the merged export equals the adapted
model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from zoo_helpers import CAPTIONS, embeddings, loss_of, make_tiny_bert, pixels, train_steps

from cliptune.config import LoraCfg, ModelCfg
from cliptune.errors import UsageError
from cliptune.models.freeze import apply_freeze, plan_from_config, set_train_mode
from cliptune.models.lora import apply_lora, export_model, merge_lora
from cliptune.models.registry import load_model

HEADS = ("image_tower.head.", "text_tower.head.", "image_tower.post_norm.", "text_tower.final_norm.",
         "image_tower.visual.ln_post.", "image_tower.visual.proj", "text_tower.ln_final.", "text_tower.text_projection",
         "image_tower.visual.attnpool.", "image_tower.proj.", "text_tower.proj.", "image_tower.backbone.model.norm.",
         "image_tower.backbone.model.fc_norm.", "logit_scale")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _spec(name, bert_dir):
    return {"composed-vit": f"composed:test_vit+hf:{bert_dir}", "composed-resnet": f"composed:test_resnet+hf:{bert_dir}"
            }.get(name, name)


@pytest.mark.parametrize("name, preset, adapted_sides", [
    ("tiny-clip", None, {"image", "text"}),
    ("openclip:cliptune-tiny-ViT", None, {"image", "text"}),  # nn.MultiheadAttention, adapted as a whole
    ("openclip:cliptune-tiny-RN", None, {"text"}),  # a CNN has no attention blocks: its trunk is frozen whole
    ("composed-vit", "unfreeze", {"image", "text"}),  # timm Attention + BERT
])
def test_only_adapters_heads_and_scale_get_gradients(bert_dir, name, preset, adapted_sides):
    model = load_model(_spec(name, bert_dir), **({"image_size": 32} if "composed" in name else {}))
    settings = apply_lora(model, LoraCfg(r=4, alpha=8))
    assert set(settings.adapted) == adapted_sides
    plan = plan_from_config(model, ModelCfg(preset=preset, lora=LoraCfg(r=4, alpha=8)))
    assert plan.adapters_only
    for side in ("image", "text"):
        assert plan.k[side] == (plan.n_blocks[side] if side in adapted_sides else 0), side
    apply_freeze(model, plan)
    set_train_mode(model, plan, True)
    loss_of(model, pixels(model)).backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    adapters = {n for n, p in model.named_parameters() if "lora_" in n}
    heads = {n for n, p in model.named_parameters() if n.startswith(HEADS)}
    assert adapters and graded == adapters | heads, sorted(graded ^ (adapters | heads))[:6]


@pytest.mark.parametrize("name", ["tiny-clip", "openclip:cliptune-tiny-ViT", "composed-vit"])
def test_merged_export_gives_the_adapted_embeddings(tmp_path, bert_dir, name):
    model = load_model(_spec(name, bert_dir), **({"image_size": 32} if "composed" in name else {}))
    apply_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0})
    apply_freeze(model, plan_from_config(model, ModelCfg(preset="unfreeze")))
    train_steps(model, steps=3, lr=1e-2)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n), "adapters must have moved"
    px = pixels(model)
    image, text = embeddings(model, px)

    export_model(model, tmp_path / "export")
    assert not any("lora_" in n for n, _ in model.named_parameters())
    merged_image, merged_text = embeddings(model, px)
    reloaded = load_model(str(tmp_path / "export"))
    re_image, re_text = embeddings(reloaded, px)
    for got in (merged_image, re_image):
        torch.testing.assert_close(got, image, atol=1e-5, rtol=0)
    for got in (merged_text, re_text):
        torch.testing.assert_close(got, text, atol=1e-5, rtol=0)
    assert merge_lora(model) == 0


def test_explicit_targets_and_errors():
    model = load_model("tiny-clip")
    settings = apply_lora(model, {"r": 2, "targets": {"text": ["fc1"]}})
    assert settings.adapted == {"text": ["layers.0.mlp.fc1", "layers.1.mlp.fc1"]}
    with pytest.raises(UsageError, match="no module to adapt"):
        apply_lora(load_model("tiny-clip"), {"targets": ["no_such_layer"]})
    tokens = model.tokenize(CAPTIONS[:2])
    assert model.encode_text(tokens).shape == (2, 32)
