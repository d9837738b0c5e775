"""The transformers backend: cut towers equal transformers' own features, and exports round-trip exactly."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json

import pytest
import torch
from PIL import Image

from cliptune.models.registry import load_model

CAPTIONS = ["a photo of a cat", "a red bicycle leaning on a wall next to an open door", "", "dog"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-clip")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tiny_siglip():
    from transformers import SiglipConfig, SiglipModel

    from cliptune.models.clip_tokenizer import build_clip_tokenizer
    from cliptune.models.hf import HFClipEncoder

    config = SiglipConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=32, patch_size=8),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-7.5)
        model.logit_scale.fill_(2.3)
    return HFClipEncoder(model, build_clip_tokenizer(16), spec="tiny-siglip")


def _features(model, pixels, tokens):
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(tokens)


# ---- exactness of the cut towers ------------------------------------------------------------------------------------
def test_encoders_equal_transformers_features_for_every_cut(tiny, pixels):
    hf = tiny.hf_model
    tokens = tiny.tokenize(CAPTIONS)
    assert tokens["attention_mask"].min() == 0, "the batch must contain padding to exercise the mask"
    with torch.no_grad():
        ref_image = torch.nn.functional.normalize(hf.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        ref_text = torch.nn.functional.normalize(hf.get_text_features(**tokens).pooler_output, dim=-1)
        assert torch.equal(tiny.encode_image(pixels), ref_image)
        assert torch.equal(tiny.encode_text(tokens), ref_text)
        for side, inputs, ref in (("image", {"pixel_values": pixels}, ref_image), ("text", tokens, ref_text)):
            tower = tiny.tower(side)
            assert tower.n_blocks == 2
            for k in range(tower.n_blocks + 1):
                features = tower.prefix(inputs, k)
                assert all(v.shape[0] == len(pixels) for v in features.values()), "features must be batch-first"
                out = torch.nn.functional.normalize(tower.suffix(features, k), dim=-1)
                assert torch.equal(out, ref), (side, k)
            with pytest.raises(ValueError):
                tower.prefix(inputs, tower.n_blocks + 1)


def test_text_features_cached_per_sample_stack_back(tiny):
    """Padding to the context length lets features of different batches be stored per sample and re-stacked."""
    tower = tiny.text_tower
    with torch.no_grad():
        a = tower.prefix(tiny.tokenize(CAPTIONS[:2], pad_to_max=True), 1)
        b = tower.prefix(tiny.tokenize(CAPTIONS[2:], pad_to_max=True), 1)
        stacked = {key: torch.cat([a[key], b[key]]) for key in a}
        whole = tiny.encode_text(tiny.tokenize(CAPTIONS), normalize=False)
        assert torch.allclose(tower.suffix(stacked, 1), whole, atol=1e-5)


def test_siglip_towers_equal_transformers_features_for_every_cut(tiny_siglip):
    model = tiny_siglip
    hf = model.hf_model
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = model.tokenize(CAPTIONS[:3])
    assert tokens["input_ids"].shape == (3, 16), "SigLIP text is always padded to the full length"
    with torch.no_grad():
        ref_image = hf.get_image_features(pixel_values=pixels).pooler_output
        ref_text = hf.get_text_features(input_ids=tokens["input_ids"]).pooler_output
        for side, inputs, ref in (("image", {"pixel_values": pixels}, ref_image), ("text", tokens, ref_text)):
            tower = model.tower(side)
            for k in range(tower.n_blocks + 1):
                assert torch.equal(tower.suffix(tower.prefix(inputs, k), k), ref), (side, k)
    assert model.embed_dim == 32
    assert model.logit_bias is hf.logit_bias and model.logit_bias.item() == pytest.approx(-7.5)
    assert model.scale().item() == pytest.approx(torch.tensor(2.3).exp().item(), rel=1e-6)


def test_tower_parts_cover_every_parameter_once(tiny):
    for tower in (tiny.image_tower, tiny.text_tower):
        parts = tower.stem_modules() + tower.trunk_blocks() + tower.head_modules()
        ids = [id(p) for m in parts for p in m.parameters()]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in tower.parameters()}
    names = list(tiny.state_dict())
    assert len(names) == len(set(names))
    assert not any(name.startswith("hf_model") for name in names), "weights must not appear twice in state_dict"


# ---- checkpoint scalars -------------------------------------------------------------------------------------------
def test_logit_scale_is_the_checkpoint_parameter(tiny):
    assert tiny.logit_scale is tiny.hf_model.logit_scale
    assert tiny.logit_scale.item() == pytest.approx(2.6592)  # CLIP's log(1/0.07) as stored in the config
    assert tiny.logit_bias is None
    assert tiny.scale().item() == pytest.approx(1 / 0.07, rel=1e-4)


# ---- inputs -------------------------------------------------------------------------------------------------------
def test_image_transform_and_tokenize(tiny):
    image = Image.new("L", (120, 80), color=128)  # greyscale, not square
    for train in (False, True):
        x = tiny.image_transform(train=train)(image)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    grey = (128 / 255 - 0.48145466) / 0.26862954
    assert tiny.image_transform()(image)[0].mean().item() == pytest.approx(grey, abs=1e-3)

    tokens = tiny.tokenize(["word " * 100, "short"], pad_to_max=True)
    assert tokens["input_ids"].shape == (2, tiny.context_length) == (2, 32)
    assert tokens["input_ids"][0, 0] == 49406 and tokens["input_ids"][0, -1] == 49407  # truncated, EOS kept
    assert tiny.tokenize(["short", "a b"])["input_ids"].shape[1] == 4  # dynamic padding to the longest


# ---- persistence --------------------------------------------------------------------------------------------------
def test_save_pretrained_folder_loads_via_hf_spec(tiny, pixels, tmp_path):
    tiny.hf_model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    tiny.image_processor.save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.spec == f"hf:{tmp_path}"
    tokens = tiny.tokenize(CAPTIONS)
    assert torch.equal(loaded.tokenize(CAPTIONS)["input_ids"], tokens["input_ids"])
    for a, b in zip(_features(tiny, pixels, tokens), _features(loaded, pixels, tokens)):
        assert torch.equal(a, b)
    # a plain save_pretrained folder is also a model path
    assert torch.equal(_features(load_model(str(tmp_path)), pixels, tokens)[0], _features(tiny, pixels, tokens)[0])


def test_save_is_native_transformers_and_reloads_by_path(tiny, pixels, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    model = load_model("tiny-clip")
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # a trained value must reach the export
        model.text_tower.head.weight.mul_(2)
    out = tmp_path / "model"
    model.save(out)
    assert (out / "model.safetensors").is_file()
    meta = json.loads((out / "cliptune.json").read_text())
    assert meta["backend"] == "hf" and meta["spec"] == "tiny-clip" and meta["embed_dim"] == 32

    tokens = model.tokenize(CAPTIONS)
    expected = _features(model, pixels, tokens)
    native = AutoModel.from_pretrained(out).eval()
    assert native.logit_scale.item() == 3.0
    assert torch.equal(AutoTokenizer.from_pretrained(out)(CAPTIONS, padding=True, return_tensors="pt")["input_ids"],
                       tokens["input_ids"])
    with torch.no_grad():
        assert torch.equal(torch.nn.functional.normalize(native.get_image_features(pixel_values=pixels).pooler_output,
                                                         dim=-1), expected[0])
        assert torch.equal(torch.nn.functional.normalize(native.get_text_features(**tokens).pooler_output, dim=-1),
                           expected[1])

    for path in (out, tmp_path):  # the export itself, and a run directory holding it under model/
        reloaded = load_model(str(path))
        assert reloaded.backend == "hf" and reloaded.spec == str(path)
        assert reloaded.logit_scale.item() == 3.0
        for a, b in zip(expected, _features(reloaded, pixels, tokens)):
            assert torch.equal(a, b)


def test_siglip_save_and_reload(tiny_siglip, tmp_path):
    tiny_siglip.save(tmp_path)
    reloaded = load_model(str(tmp_path))
    assert reloaded.model_type == "siglip"
    assert reloaded.logit_bias.item() == pytest.approx(-7.5)
    pixels = torch.randn(2, 3, 32, 32)
    tokens = tiny_siglip.tokenize(CAPTIONS[:2])
    for a, b in zip(_features(tiny_siglip, pixels, tokens), _features(reloaded, pixels, tokens)):
        assert torch.equal(a, b)
    assert reloaded.image_transform()(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
