"""The composed backend: timm/torchvision image backbones + a local HF text encoder, cut at every block exactly."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from zoo_helpers import CAPTIONS, make_tiny_bert, pixels

from cliptune.errors import ModelLoadError, UsageError
from cliptune.models.composed import parse_composed
from cliptune.models.registry import load_model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.mark.parametrize("image, attention_pool", [
    ("test_resnet", False), ("test_vit", True), ("test_convnext", False), ("test_efficientnet", True),
    ("tv:resnet18", False), ("test_byobnet", False),  # the last one: an uncut timm family, one block
])
def test_cut_towers_equal_the_whole_tower_for_every_k(bert_dir, image, attention_pool):
    model = load_model(f"composed:{image}+hf:{bert_dir}", image_size=32, attention_pool=attention_pool,
                       head_batch_norm=True, embed_dim=16)
    px = pixels(model, 3)
    tokens = model.tokenize(CAPTIONS[:3])
    assert tokens["attention_mask"].min() == 0, "the batch must contain padding to exercise the mask"
    with torch.no_grad():
        for side, inputs in (("image", {"pixel_values": px}), ("text", tokens)):
            tower = model.tower(side)
            ref = tower(inputs)
            for k in range(tower.n_blocks + 1):
                assert torch.equal(tower.suffix(tower.prefix(inputs, k), k), ref), (side, k)
        # the text tower is BERT itself, mean pooled
        hidden = model.text_model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        assert torch.allclose(model.text_tower(tokens), model.text_tower.proj(pooled), atol=1e-6)
    assert model.encode_image(px).shape == (3, 16)


def test_frozen_trunk_with_fixed_pooling_caches_one_vector_per_image(bert_dir):
    model = load_model(f"composed:test_resnet+hf:{bert_dir}", image_size=32)
    px = pixels(model, 2)
    assert set(model.image_tower.prefix({"pixel_values": px}, 0)) == {"pooled"}
    assert set(model.text_tower.prefix(model.tokenize(["a cat", "dog"]), 0)) == {"pooled"}
    pooled_attn = load_model(f"composed:test_resnet+hf:{bert_dir}", image_size=32, attention_pool=True)
    assert pooled_attn.image_tower.prefix({"pixel_values": px}, 0)["hidden"].ndim == 4  # the pool trains


def test_head_is_a_gelu_mlp_with_optional_batchnorm(bert_dir):
    model = load_model(f"composed:test_resnet+hf:{bert_dir}", image_size=32, head_batch_norm=True)
    kinds = [type(m).__name__ for m in model.image_tower.proj]
    assert kinds == ["Dropout", "Linear", "BatchNorm1d", "GELU", "Linear"]
    assert model.default_freeze == "text"


def test_local_backbone_weights_and_spec_errors(tmp_path, bert_dir):
    from safetensors.torch import save_file
    import timm

    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    torch.nn.init.constant_(backbone.conv1[0].weight, 0.01)
    save_file(backbone.state_dict(), str(tmp_path / "w.safetensors"))
    model = load_model(f"composed:test_resnet@{tmp_path / 'w.safetensors'}+hf:{bert_dir}", image_size=32)
    assert torch.all(model.image_tower.backbone.model.conv1[0].weight == 0.01)  # classifier weights ignored

    assert parse_composed("resnet50@/w/r.pt+hf:/m/text") == ("resnet50", "/w/r.pt", "/m/text")
    with pytest.raises(UsageError):
        load_model("composed:resnet50")
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        load_model("composed:test_resnet+hf:sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ModelLoadError, match="unknown timm model"):
        load_model(f"composed:no_such_net+hf:{bert_dir}")


@pytest.mark.parametrize("image", ["test_resnet", "test_vit", "test_convnext", "test_efficientnet", "tv:resnet18",
                                   "test_byobnet"])
def test_uncut_backbone_equals_the_library_forward(bert_dir, image):
    """Stem → every block → finish → pool reproduces timm's forward_features + forward_head(pre_logits=True), or
    torchvision's forward with the classifier removed, so a change inside the library fails here."""
    model = load_model(f"composed:{image}+hf:{bert_dir}", image_size=32, embed_dim=16)
    backbone = model.image_tower.backbone
    px = pixels(model, 2)
    with torch.no_grad():
        ours = backbone.pool(backbone.finish(backbone.run(backbone.embed(px), 0, len(backbone.blocks()))))
        net = backbone.model
        ref = net(px) if image.startswith("tv:") else net.forward_head(net.forward_features(px), pre_logits=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
