"""Freezing on every backend: exactly which parameters receive gradients per preset, locked BatchNorm statistics,
and learning-rate groups (heads vs backbone, layer-wise decay)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from zoo_helpers import loss_of, make_tiny_bert, pixels

from cliptune.config import ModelCfg
from cliptune.errors import UsageError
from cliptune.models.freeze import apply_freeze, plan_from_config, set_train_mode
from cliptune.models.registry import load_model
from cliptune.train.optim import build_optimizer


def _blocks(pattern: str, n: int, start: int = 0) -> list[str]:
    return [pattern.format(i + start) for i in range(n)]


# Written out from the parameter names, independent of the towers' own stem/block/head lists.
LAYOUTS = {
    "tiny-clip": {
        "image": (["image_tower.embeddings.", "image_tower.pre_norm."], _blocks("image_tower.layers.{}.", 2),
                  ["image_tower.post_norm.", "image_tower.head."]),
        "text": (["text_tower.embeddings."], _blocks("text_tower.layers.{}.", 2),
                 ["text_tower.final_norm.", "text_tower.head."]),
    },
    "openclip:cliptune-tiny-ViT": {
        "image": (["image_tower.visual.conv1.", "image_tower.visual.class_embedding",
                   "image_tower.visual.positional_embedding", "image_tower.visual.ln_pre."],
                  _blocks("image_tower.visual.transformer.resblocks.{}.", 2),
                  ["image_tower.visual.ln_post.", "image_tower.visual.proj"]),
        "text": (["text_tower.token_embedding.", "text_tower.positional_embedding"],
                 _blocks("text_tower.transformer.resblocks.{}.", 2),
                 ["text_tower.ln_final.", "text_tower.text_projection"]),
    },
    "openclip:cliptune-tiny-RN": {
        "image": (["image_tower.visual.conv", "image_tower.visual.bn"], _blocks("image_tower.visual.layer{}.", 4, 1),
                  ["image_tower.visual.attnpool."]),
        "text": (["text_tower.token_embedding.", "text_tower.positional_embedding"],
                 _blocks("text_tower.transformer.resblocks.{}.", 2),
                 ["text_tower.ln_final.", "text_tower.text_projection"]),
    },
    "composed": {
        "image": (["image_tower.backbone.model.conv1.", "image_tower.backbone.model.bn1."],
                  _blocks("image_tower.backbone.model.layer{}.", 4, 1), ["image_tower.proj."]),
        "text": (["text_tower.model.embeddings."], _blocks("text_tower.model.encoder.layer.{}.", 2),
                 ["text_tower.proj."]),
    },
    "lite": {
        "image": (["image_tower.stem."], _blocks("image_tower.blocks.{}.", 16) + ["image_tower.conv_head."],
                  ["image_tower.proj."]),
        "text": (["text_tower.bert.embeddings."], _blocks("text_tower.bert.encoder.layer.{}.", 6),
                 ["text_tower.proj."]),
    },
}


def expected_trainable(layout, k: dict, heads: bool = True) -> list[str]:
    prefixes = ["logit_scale"]
    for side, (stem, blocks, head) in layout.items():
        n = len(blocks)
        prefixes += (stem if k[side] == n else []) + blocks[n - k[side]:] + (head if heads else [])
    return prefixes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    bert = make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
    return {
        "tiny-clip": load_model("tiny-clip"),
        "openclip:cliptune-tiny-ViT": load_model("openclip:cliptune-tiny-ViT"),
        "openclip:cliptune-tiny-RN": load_model("openclip:cliptune-tiny-RN"),
        "composed": load_model(f"composed:test_resnet+hf:{bert}", image_size=32),
        "lite": load_model("lite", pretrained=False, image_size=32),
    }


def _graded(model, cfg: ModelCfg) -> tuple[set[str], object]:
    plan = plan_from_config(model, cfg)
    apply_freeze(model, plan)
    set_train_mode(model, plan, True)
    model.zero_grad(set_to_none=True)
    loss_of(model, pixels(model, 4)).backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    return graded, plan


CASES = [  # (settings, image k, text k) with n = blocks per tower; None = all blocks
    ({"preset": "unfreeze"}, None, None),
    ({"preset": "mixfreeze"}, 0, 0),
    ({"preset": "vision-freeze"}, "n-6", None),
    ({"vision_layers_frozen": 1, "freeze": "text", "unfreeze_last_n": {"image": 0, "text": 1}}, "n-1", 1),
    ({"preset": "mixfreeze", "freeze_heads": True}, 0, 0),
]


@pytest.mark.parametrize("backend", list(LAYOUTS))
def test_exactly_the_planned_parameters_get_gradients(models, backend):
    model, layout = models[backend], LAYOUTS[backend]
    names = [n for n, _ in model.named_parameters()]
    for settings, k_image, k_text in CASES:
        graded, plan = _graded(model, ModelCfg(**settings))
        n = {side: len(layout[side][1]) for side in layout}
        k = {}
        for side, want in (("image", k_image), ("text", k_text)):
            k[side] = n[side] if want is None else max(0, n[side] - 6) if want == "n-6" else \
                n[side] - 1 if want == "n-1" else want
        if backend == "composed" and "preset" not in settings and settings.get("freeze") is None:
            k["text"] = 0  # composed keeps its text encoder frozen unless a preset says otherwise
        assert plan.k == k, (settings, plan.k)
        prefixes = expected_trainable(layout, k, heads=not settings.get("freeze_heads", False))
        expected = {name for name in names if name.startswith(tuple(prefixes))}
        assert graded == expected, (settings, sorted(graded ^ expected)[:6])


def test_composed_text_is_frozen_by_default_and_unfreeze_trains_it(models):
    model = models["composed"]
    assert plan_from_config(model, ModelCfg()).k["text"] == 0
    assert plan_from_config(model, ModelCfg(preset="unfreeze")).k["text"] == 2
    assert plan_from_config(model, ModelCfg(unfreeze_last_n={"image": 0, "text": 1})).k["text"] == 1
    with pytest.raises(UsageError, match="preset"):
        plan_from_config(model, ModelCfg(preset="mixfreeze", vision_layers_frozen=3))


def test_frozen_batchnorm_statistics_stay_locked(models):
    model = models["composed"]
    plan = plan_from_config(model, ModelCfg(vision_layers_frozen=2, preset=None))
    apply_freeze(model, plan)
    backbone = model.image_tower.backbone.model
    watched = {"stem": backbone.bn1, "layer2": backbone.layer2[0].bn1, "layer3": backbone.layer3[0].bn1}
    before = {name: bn.running_mean.clone() for name, bn in watched.items()}
    set_train_mode(model, plan, True)
    with torch.no_grad():
        model.encode_image(pixels(model, 4) * 3 + 1)
    model.eval()
    assert torch.equal(watched["stem"].running_mean, before["stem"])
    assert torch.equal(watched["layer2"].running_mean, before["layer2"])
    assert not torch.equal(watched["layer3"].running_mean, before["layer3"])  # trainable: statistics adapt
    watched["layer3"].running_mean.copy_(before["layer3"])


def test_head_lr_and_layer_wise_decay(models):
    model = models["tiny-clip"]
    apply_freeze(model, plan_from_config(model, ModelCfg()))
    optimizer = build_optimizer(model, lr=1.0, weight_decay=0.1, head_lr=10.0, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["logit_scale"])] == 10.0
    assert lr_of[id(named["image_tower.head.weight"])] == 10.0
    assert lr_of[id(named["image_tower.post_norm.weight"])] == 10.0
    assert lr_of[id(named["image_tower.layers.1.mlp.fc1.weight"])] == 0.5
    assert lr_of[id(named["image_tower.layers.0.mlp.fc1.weight"])] == 0.25
    assert lr_of[id(named["image_tower.embeddings.patch_embedding.weight"])] == 0.125
    assert lr_of[id(named["text_tower.layers.1.self_attn.q_proj.weight"])] == 0.5
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(named["logit_scale"])] == 0.0 and decay_of[id(named["image_tower.layers.1.mlp.fc1.bias"])] == 0.0

    apply_freeze(model, plan_from_config(model, ModelCfg(preset="mixfreeze")))
    plain = build_optimizer(model, lr=1.0, weight_decay=0.1)
    in_groups = {id(p) for g in plain.param_groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert {g["lr"] for g in plain.param_groups} == {1.0}
