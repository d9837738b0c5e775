"""Every backend: build tiny → train 5 steps → export → reload by path → identical embeddings; each export also
loads in the library it is native to."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from zoo_helpers import CAPTIONS, embeddings, make_tiny_bert, pixels, train_steps

from cliptune.config import ModelCfg
from cliptune.models.freeze import apply_freeze, plan_from_config
from cliptune.models.registry import load_model


def _train_export_reload(model, directory, steps: int = 5):
    losses = train_steps(model, steps=steps)
    assert all(torch.isfinite(torch.tensor(losses)))
    px = pixels(model)
    image, text = embeddings(model, px)
    model.save(directory)
    reloaded = load_model(str(directory))
    re_image, re_text = embeddings(reloaded, px)
    assert torch.equal(re_image, image) and torch.equal(re_text, text)
    assert torch.equal(reloaded.logit_scale.detach(), model.logit_scale.detach())
    return px, image, text


def test_lite_round_trip(tmp_path):
    model = load_model("lite", pretrained=False, image_size=32)
    apply_freeze(model, plan_from_config(model, ModelCfg(preset="mixfreeze")))  # heads only: cheap on CPU
    _train_export_reload(model, tmp_path / "lite")


def test_hf_round_trip_loads_in_transformers(tmp_path):
    from transformers import AutoModel

    model = load_model("tiny-clip")
    px, image, text = _train_export_reload(model, tmp_path / "hf")
    native = AutoModel.from_pretrained(tmp_path / "hf").eval()
    tokens = model.tokenize(CAPTIONS[:4])
    with torch.no_grad():
        features = native.get_image_features(pixel_values=px).pooler_output
        text_features = native.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(torch.nn.functional.normalize(features, dim=-1), image, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.nn.functional.normalize(text_features, dim=-1), text, atol=1e-6, rtol=0)


def test_openclip_round_trip_loads_in_open_clip(tmp_path):
    import open_clip

    model = load_model("openclip:cliptune-tiny-sigmoid")
    px, image, text = _train_export_reload(model, tmp_path / "oc")
    native, _, _ = open_clip.create_model_and_transforms(
        "cliptune-tiny-sigmoid", pretrained=str(tmp_path / "oc" / "open_clip_model.safetensors"))
    native.eval()
    with torch.no_grad():
        assert torch.equal(native.encode_image(px, normalize=True), image)
        assert torch.equal(native.encode_text(model.tokenize(CAPTIONS[:4])["input_ids"], normalize=True), text)
        assert torch.equal(native.logit_bias.detach(), model.logit_bias.detach())


def test_composed_round_trip_parts_load_natively(tmp_path):
    import timm
    from safetensors.torch import load_file
    from transformers import AutoModel

    bert = make_tiny_bert(tmp_path / "bert")
    model = load_model(f"composed:test_resnet+hf:{bert}", image_size=32, head_batch_norm=True, attention_pool=True)
    _train_export_reload(model, tmp_path / "composed")
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    backbone.load_state_dict(load_file(str(tmp_path / "composed" / "image_backbone.safetensors")))
    text = AutoModel.from_pretrained(tmp_path / "composed" / "text")
    trained = model.image_tower.backbone.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in backbone.state_dict().items())
    assert torch.equal(text.embeddings.word_embeddings.weight, model.text_model.embeddings.word_embeddings.weight)


# One small example of every image backbone family composed: supports; a new family needs an entry here.
BACKBONE_EXAMPLES = {
    "timm:VisionTransformer": "test_vit",
    "timm:ResNet": "test_resnet",
    "timm:ConvNeXt": "test_convnext",
    "timm:EfficientNet": "test_efficientnet",
    "timm:*": "test_byobnet",
    "tv:ResNet": "tv:resnet18",
}


def test_every_backbone_family_has_a_round_trip_example():
    from cliptune.models.backbones import BACKBONE_FAMILIES

    assert set(BACKBONE_EXAMPLES) == set(BACKBONE_FAMILIES.names())


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.mark.parametrize("family", sorted(BACKBONE_EXAMPLES))
def test_composed_round_trip_for_every_backbone_family(tmp_path, bert_dir, family):
    from cliptune.models.backbones import BACKBONE_FAMILIES

    image = BACKBONE_EXAMPLES[family]
    model = load_model(f"composed:{image}+hf:{bert_dir}", image_size=32)
    assert type(model.image_tower.backbone) is BACKBONE_FAMILIES.get(family)
    _train_export_reload(model, tmp_path / "composed", steps=2)  # trained: BatchNorm statistics moved too


def test_torchvision_backbone_loads_imagenet_layout_weights(tmp_path, bert_dir):
    """A torchvision checkpoint keeps its classifier (`fc.*`); the backbone drops it and loads the rest."""
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(net.conv1.weight, 0.01)
    save_file(net.state_dict(), str(tmp_path / "r18.safetensors"))
    model = load_model(f"composed:tv:resnet18@{tmp_path / 'r18.safetensors'}+hf:{bert_dir}", image_size=32)
    assert torch.all(model.image_tower.backbone.model.conv1.weight == 0.01)
